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
