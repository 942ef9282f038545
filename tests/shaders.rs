//! Every shader parses, validates and translates to the shading language of every backend
//! wgpu drives (SPIR-V for Vulkan, MSL for Metal, HLSL for DX12, GLSL ES for GL), with naga
//! alone: a kernel that Metal or DX12 would reject fails here, on a machine that has neither.

use naga::back::{glsl, hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};

/// WebGPU's default limits, which every kernel keeps within.
const MAX_WORKGROUP_INVOCATIONS: u32 = 256;
const MAX_STORAGE_BUFFERS_PER_STAGE: usize = 8;

fn parse(name: &str, source: &str) -> (naga::Module, naga::valid::ModuleInfo) {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{name}.wgsl does not parse:\n{}", e.emit_to_string(source)));
    // WebGPU's capabilities: nothing optional (no f64, no f16, no subgroups, no immediates).
    let info = Validator::new(ValidationFlags::all(), Capabilities::empty())
        .validate(&module)
        .unwrap_or_else(|e| {
            panic!(
                "{name}.wgsl does not validate:\n{}",
                e.emit_to_string(source)
            )
        });
    (module, info)
}

#[test]
fn every_shader_validates_with_webgpu_capabilities() {
    assert!(!cenet::shaders::SOURCES.is_empty(), "no shaders embedded");
    for (name, source) in cenet::shaders::SOURCES {
        let (module, _) = parse(name, source);
        for ep in &module.entry_points {
            assert_eq!(
                ep.stage,
                naga::ShaderStage::Compute,
                "{name}::{} is not a compute entry",
                ep.name
            );
            let [x, y, z] = ep.workgroup_size;
            assert!(
                x * y * z <= MAX_WORKGROUP_INVOCATIONS,
                "{name}::{} uses {} invocations per workgroup, \
                 over WebGPU's {MAX_WORKGROUP_INVOCATIONS}",
                ep.name,
                x * y * z
            );
        }
        let storage = module
            .global_variables
            .iter()
            .filter(|(_, g)| matches!(g.space, naga::AddressSpace::Storage { .. }))
            .count();
        assert!(
            storage <= MAX_STORAGE_BUFFERS_PER_STAGE,
            "{name}.wgsl declares {storage} storage buffers, \
             over WebGPU's {MAX_STORAGE_BUFFERS_PER_STAGE}"
        );
    }
}

#[test]
fn every_shader_translates_for_vulkan_metal_dx12_and_gl() {
    for (name, source) in cenet::shaders::SOURCES {
        let (module, info) = parse(name, source);
        // Backends other than SPIR-V need `override` constants resolved first, as wgpu does at
        // pipeline creation; the shaders' defaults stand in for the values cenet passes.
        let (module, info) = naga::back::pipeline_constants::process_overrides(
            &module,
            &info,
            None,
            &naga::back::PipelineConstants::default(),
        )
        .unwrap_or_else(|e| panic!("{name}.wgsl: override constants: {e}"));

        spv::write_vec(&module, &info, &spv::Options::default(), None)
            .unwrap_or_else(|e| panic!("{name}.wgsl → SPIR-V (Vulkan): {e}"));

        let msl_options = msl::Options {
            lang_version: (2, 1),
            ..Default::default()
        };
        msl::write_string(
            &module,
            &info,
            &msl_options,
            &msl::PipelineOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{name}.wgsl → MSL (Metal): {e}"));

        let mut hlsl_out = String::new();
        let hlsl_options = hlsl::Options::default();
        hlsl::Writer::new(
            &mut hlsl_out,
            &hlsl_options,
            &hlsl::PipelineOptions::default(),
        )
        .write(&module, &info, None)
        .unwrap_or_else(|e| panic!("{name}.wgsl → HLSL (DX12): {e}"));

        for ep in &module.entry_points {
            let mut glsl_out = String::new();
            let options = glsl::Options::default();
            let pipeline = glsl::PipelineOptions {
                shader_stage: ep.stage,
                entry_point: ep.name.clone(),
                multiview: None,
            };
            glsl::Writer::new(
                &mut glsl_out,
                &module,
                &info,
                &options,
                &pipeline,
                Default::default(),
            )
            .and_then(|mut w| w.write())
            .unwrap_or_else(|e| panic!("{name}.wgsl::{} → GLSL ES 3.1 (GL): {e:?}", ep.name));
        }
    }
}

/// Where `source` puts a bitwise operator (`&`, `|`, `^`) beside another binary operator
/// at one level of parentheses, as `a / b & c`: WGSL's grammar forbids it (a bitwise
/// operand must be a unary expression) and browsers reject it, though naga accepts it.
/// Returns the offending lines, numbered from 1.
fn bitwise_mixed_with_other_operators(source: &str) -> Vec<usize> {
    const TEMPLATES: [&str; 8] = [
        "vec2", "vec3", "vec4", "array", "ptr", "atomic", "mat", "select",
    ];
    #[derive(Default)]
    struct Level {
        bitwise: Option<char>,
        other: bool,
        template: bool,
    }
    let mut bad = Vec::new();
    for (number, line) in source.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let chars: Vec<char> = code.chars().collect();
        let mut levels = vec![Level::default()];
        // Whether the previous token ends an operand (so an operator after it is binary).
        let mut after_operand = false;
        let mut word = String::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let next = chars.get(i + 1).copied().unwrap_or(' ');
            if c.is_alphanumeric() || c == '_' || c == '.' {
                word.push(c);
                after_operand = true;
                i += 1;
                continue;
            }
            let prev_word = std::mem::take(&mut word);
            let template_type = TEMPLATES.iter().any(|t| prev_word.starts_with(t));
            // A binary operator: bitwise (its character) or any other.
            let mut binary = |levels: &mut Vec<Level>, bitwise: Option<char>| {
                let level = levels.last_mut().expect("a level");
                let mixed = match bitwise {
                    Some(op) => level.other || level.bitwise.is_some_and(|b| b != op),
                    None => level.bitwise.is_some(),
                };
                match bitwise {
                    Some(op) => level.bitwise = Some(op),
                    None => level.other = true,
                }
                if mixed && !bad.contains(&(number + 1)) {
                    bad.push(number + 1);
                }
            };
            match c {
                '(' | '[' => {
                    levels.push(Level::default());
                    after_operand = false;
                }
                '<' if template_type && prev_word != "select" => {
                    levels.push(Level {
                        template: true,
                        ..Level::default()
                    });
                    after_operand = false;
                }
                ')' | ']' => {
                    if levels.len() > 1 {
                        levels.pop();
                    }
                    after_operand = true;
                }
                '>' if levels.last().is_some_and(|l| l.template) => {
                    levels.pop();
                    if next == '>' && levels.last().is_some_and(|l| l.template) {
                        levels.pop();
                        i += 1;
                    }
                    after_operand = true;
                }
                ';' | ',' | '{' | '}' | ':' => {
                    let template = levels.last().is_some_and(|l| l.template);
                    *levels.last_mut().expect("a level") = Level {
                        template,
                        ..Level::default()
                    };
                    after_operand = false;
                }
                '=' if next != '=' => {
                    let template = levels.last().is_some_and(|l| l.template);
                    *levels.last_mut().expect("a level") = Level {
                        template,
                        ..Level::default()
                    };
                    after_operand = false;
                }
                '&' | '|' if next == c => {
                    binary(&mut levels, None);
                    after_operand = false;
                    i += 1;
                }
                '&' | '|' | '^' if next == '=' => {
                    // A compound assignment: a new expression follows.
                    *levels.last_mut().expect("a level") = Level::default();
                    after_operand = false;
                    i += 1;
                }
                '&' | '|' | '^' => {
                    if after_operand {
                        binary(&mut levels, Some(c));
                    }
                    after_operand = false;
                }
                '+' | '-' | '*' | '/' | '%' | '<' | '>' | '!' | '=' => {
                    let doubled = (c == '<' || c == '>') && next == c;
                    let compound =
                        matches!(next, '=') || (doubled && chars.get(i + 2) == Some(&'='));
                    if compound && c != '<' && c != '>' && c != '!' && c != '=' {
                        *levels.last_mut().expect("a level") = Level::default();
                    } else if c == '-' && next == '>' {
                        // A return type follows.
                    } else if after_operand && c != '!' {
                        binary(&mut levels, None);
                    }
                    if doubled || (compound && c != '=') {
                        i += 1;
                    }
                    after_operand = false;
                }
                _ => {}
            }
            i += 1;
        }
    }
    bad
}

#[test]
fn no_shader_mixes_bitwise_and_other_operators_without_parentheses() {
    for bad in [
        "let a = b / c & 3u;",
        "x = y & z + 1;",
        "if (a & b == 0u) {",
        "v = a | b & c;",
    ] {
        assert_eq!(bitwise_mixed_with_other_operators(bad), [1], "{bad}");
    }
    for good in [
        "let a = (b / c) & 3u;",
        "let s = e & 3;",
        "fn f(p: ptr<function, array<Elem, 16>>, q: u32) -> vec4<f32> {",
        "a &= b + c;",
        "if (x < 3u && y >= 2u) {",
        "add_outer(&acc, -x & y);",
        "let q = e >> 2u;",
        "let m = select(0u, 1u, a < b) & 1u;",
    ] {
        assert!(
            bitwise_mixed_with_other_operators(good).is_empty(),
            "{good}"
        );
    }
    for (name, source) in cenet::shaders::SOURCES {
        let bad = bitwise_mixed_with_other_operators(source);
        assert!(
            bad.is_empty(),
            "{name}.wgsl mixes & | ^ with other operators on lines {bad:?}"
        );
    }
}
