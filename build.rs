//! Embeds every `shaders/*.wgsl` file in the crate, so the library runs from any directory
//! and in wasm without reading files at run time.

use std::{env, fs, path::Path};

fn main() {
    let dir = Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap()).join("shaders");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<_> = fs::read_dir(&dir)
        .expect("shaders/ folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wgsl"))
        .collect();
    names.sort();

    let mut table = String::from("/// Every shader in `shaders/`: (file stem, WGSL source).\n");
    table.push_str("pub static SOURCES: &[(&str, &str)] = &[\n");
    for path in &names {
        println!("cargo:rerun-if-changed={}", path.display());
        let stem = path.file_stem().unwrap().to_string_lossy();
        table.push_str(&format!(
            "    ({stem:?}, include_str!({:?})),\n",
            path.display().to_string()
        ));
    }
    table.push_str("];\n");
    let out = Path::new(&env::var("OUT_DIR").unwrap()).join("shader_sources.rs");
    fs::write(out, table).expect("write shader table");
}
