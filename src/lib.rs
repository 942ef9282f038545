//! # cenet
//!
//! Train convolutional networks, and Channel Equilibrium (CE) networks in particular, with
//! WGSL compute shaders through wgpu: on Vulkan, Metal, DX12, in the browser through WebGPU,
//! and on machines without a GPU through a software Vulkan driver.
//!
//! The layers, from the bottom:
//! - [`gpu::Gpu`]: the device, its limits, error scopes, the buffer pool and pipeline cache;
//! - [`Tensor`]: an f32 (or u32) buffer with a shape, uploaded and read back asynchronously;
//! - [`kernels`]: one module per op family, each recording dispatches into a
//!   [`kernels::Recorder`] that submits a whole batch of work at once.
//!
//! ```no_run
//! use cenet::{Gpu, Tensor, kernels::activation};
//! let gpu = Gpu::new()?;
//! let x = Tensor::from_slice(&gpu, &[2, 2], &[-1.0, 2.0, -3.0, 4.0])?;
//! let y = activation::relu(&gpu, &x)?;
//! assert_eq!(y.to_vec(&gpu)?, vec![0.0, 2.0, 0.0, 4.0]);
//! # Ok::<(), cenet::Error>(())
//! ```

pub mod checkpoint;
pub mod data;
pub mod error;
pub mod gpu;
pub mod graph;
pub mod kernels;
pub mod nn;
pub mod rng;
pub mod shaders;
pub mod tensor;
#[cfg(not(target_arch = "wasm32"))]
pub mod train;

pub use error::{Error, Result};
pub use gpu::Gpu;
pub use tensor::{DType, Tensor};
