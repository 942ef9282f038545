//! Embeds every `shaders/*.wgsl` file in the crate, so the library runs from any directory
//! and in wasm without reading files at run time. A shader whose element type is the alias
//! `Elem` (a line `alias Elem = f32;`) is embedded twice: as written, and as `<stem>4` with
//! `Elem = vec4<f32>`, which moves four elements per load and store.

use std::{env, fs, path::Path};

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
        table.push_str(&format!(
            "    ({stem:?}, include_str!({:?})),\n",
            path.display().to_string()
        ));
        // A shader written over `alias Elem = f32;` also gets a variant STEM4 over vec4s.
        let source = fs::read_to_string(path).expect("read shader");
        if source.lines().any(|l| l.trim() == SCALAR_ALIAS) {
            let mut vec4 = source.replace(SCALAR_ALIAS, VEC4_ALIAS);
            for (scalar, vector) in VEC4_HELPERS {
                vec4 = vec4.replace(scalar, vector);
            }
            let variant = out_dir.join(format!("{stem}4.wgsl"));
            fs::write(&variant, vec4).expect("write shader variant");
            table.push_str(&format!(
                "    (\"{stem}4\", include_str!({:?})),\n",
                variant.display().to_string()
            ));
        }
    }
    table.push_str("];\n");
    let out = out_dir.join("shader_sources.rs");
    fs::write(out, table).expect("write shader table");
}
