//! cenet in the browser: trains a small CE-ResNet through WebGPU with the same shaders and
//! graph executor as the native build, on the built-in synthetic set or on CIFAR-10 files
//! the user picks.
//!
//! Built for `wasm32-unknown-unknown` as a library that `wasm-bindgen` wraps for the page
//! (`index.html`, `app.js`); `build.sh` beside this file builds it and serves the page.
//! Natively only the training session compiles, and its tests run with the others.

pub mod session;

#[cfg(target_arch = "wasm32")]
mod bindings;
