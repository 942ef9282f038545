//! Float64 CPU references of every op, written from the definitions (PyTorch's semantics and
//! the CE spec), never from the GPU code. Layouts match the GPU tensors: row-major NCHW.
#![allow(dead_code)]

pub mod batchnorm;
pub mod ce;
pub mod conv;
pub mod linear;
pub mod loss;
pub mod network;
pub mod pool;
pub mod sgd;
