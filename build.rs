//! Embeds every `shaders/*.wgsl` file in the crate, so the library runs from any directory
//! and in wasm without reading files at run time. A shader whose element type is the alias
//! `Elem` (a line `alias Elem = f32;`) is embedded twice: as written, and as `<stem>4` with
//! `Elem = vec4<f32>`, which moves four elements per load and store. A line
//! `// #include NAME` is replaced by `shaders/include/NAME`.

use std::{env, fs, path::Path};

/// A shader line that stands for a file of `shaders/include/`.
const INCLUDE: &str = "// #include ";

/// The line that marks a shader with a vec4 variant, and what replaces it there.
const SCALAR_ALIAS: &str = "alias Elem = f32;";
const VEC4_ALIAS: &str = "alias Elem = vec4<f32>;";
/// Lines of the scalar form that the vec4 variant replaces too: the helpers `total` (the
/// sum of an Elem's lanes), `first` (its first lane) and `lanes` (how many it has), for
/// shaders that reduce Elems.
const VEC4_HELPERS: [(&str, &str); 3] = [
    (
        "fn lanes() -> f32 {\n    return 1.0;\n}",
        "fn lanes() -> f32 {\n    return 4.0;\n}",
    ),
    (
        "fn total(v: Elem) -> f32 {\n    return v;\n}",
        "fn total(v: Elem) -> f32 {\n    return v.x + v.y + v.z + v.w;\n}",
    ),
    (
        "fn first(v: Elem) -> f32 {\n    return v;\n}",
        "fn first(v: Elem) -> f32 {\n    return v.x;\n}",
    ),
];

/// Replaces every line `// #include NAME` with the text of `shaders/include/NAME`: the
/// declarations several shaders share (the CE kernels' parameter block).
fn expand_includes(dir: &Path, source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    for line in source.lines() {
        match line.trim().strip_prefix(INCLUDE) {
            Some(name) => {
                let path = dir.join("include").join(name.trim());
                println!("cargo:rerun-if-changed={}", path.display());
                let text = fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("shader include {}: {e}", path.display()));
                out.push_str(&text);
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

fn main() {
    let dir = Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap()).join("shaders");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<_> = fs::read_dir(&dir)
        .expect("shaders/ folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wgsl"))
        .collect();
    names.sort();

    let mut table = String::from(
        "/// Every shader in `shaders/` and its vec4 variant if it has one: (name, WGSL source).\n",
    );
    table.push_str("pub static SOURCES: &[(&str, &str)] = &[\n");
    let out_dir = Path::new(&env::var("OUT_DIR").unwrap()).to_path_buf();
    for path in &names {
        println!("cargo:rerun-if-changed={}", path.display());
        let stem = path.file_stem().unwrap().to_string_lossy();
        let source = expand_includes(&dir, &fs::read_to_string(path).expect("read shader"));
        let mut variants = vec![(stem.to_string(), source.clone())];
        // A shader written over `alias Elem = f32;` also gets a variant STEM4 over vec4s.
        if source.lines().any(|l| l.trim() == SCALAR_ALIAS) {
            let mut vec4 = source.replace(SCALAR_ALIAS, VEC4_ALIAS);
            for (scalar, vector) in VEC4_HELPERS {
                vec4 = vec4.replace(scalar, vector);
            }
            variants.push((format!("{stem}4"), vec4));
        }
        for (name, text) in variants {
            let file = out_dir.join(format!("{name}.wgsl"));
            fs::write(&file, text).expect("write shader");
            table.push_str(&format!(
                "    ({name:?}, include_str!({:?})),\n",
                file.display().to_string()
            ));
        }
    }
    table.push_str("];\n");
    let out = out_dir.join("shader_sources.rs");
    fs::write(out, table).expect("write shader table");
}
