//! The WGSL sources in `shaders/`, embedded at compile time by `build.rs`.

include!(concat!(env!("OUT_DIR"), "/shader_sources.rs"));

/// The source of `shaders/{name}.wgsl`, if there is such a file.
pub fn source(name: &str) -> Option<&'static str> {
    SOURCES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}
