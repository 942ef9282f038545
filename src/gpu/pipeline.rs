//! Compute pipelines with explicit bind-group layouts, compiled once per device.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::Gpu;
use crate::error::{Error, Result};

/// How a kernel uses one binding of group 0. Bindings are numbered in order from 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Binding {
    /// `var<storage, read>`
    Read,
    /// `var<storage, read_write>`
    ReadWrite,
    /// `var<uniform>`: the kernel's parameters.
    Uniform,
}

/// One shader entry point, its bindings and its pipeline-overridable constants.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelSpec {
    /// File stem in `shaders/`, e.g. `"conv2d_forward"`.
    pub shader: &'static str,
    /// Entry point name.
    pub entry: &'static str,
    /// Bindings of `@group(0)`, in binding order.
    pub bindings: &'static [Binding],
    /// Values for WGSL `override` constants, by name.
    pub constants: Vec<(&'static str, f64)>,
}

impl KernelSpec {
    /// A kernel with no override constants.
    pub fn new(shader: &'static str, entry: &'static str, bindings: &'static [Binding]) -> Self {
        KernelSpec {
            shader,
            entry,
            bindings,
            constants: Vec::new(),
        }
    }

    /// The same kernel with `name` overridden to `value`.
    pub fn with(mut self, name: &'static str, value: f64) -> Self {
        self.constants.push((name, value));
        self
    }

    fn key(&self) -> String {
        let mut key = format!("{}::{}", self.shader, self.entry);
        for (name, value) in &self.constants {
            key.push_str(&format!(",{name}={value}"));
        }
        key
    }
}

/// A compiled kernel.
pub struct Kernel {
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) layout: wgpu::BindGroupLayout,
    pub(crate) bindings: &'static [Binding],
    pub(crate) name: String,
}

#[derive(Default)]
pub(crate) struct PipelineCache {
    kernels: Mutex<HashMap<String, Arc<Kernel>>>,
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
}

impl PipelineCache {
    pub(crate) fn len(&self) -> usize {
        self.kernels.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub(crate) fn get_or_create(&self, gpu: &Gpu, spec: &KernelSpec) -> Result<Arc<Kernel>> {
        let key = spec.key();
        if let Some(k) = self
            .kernels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(k.clone());
        }
        let kernel = Arc::new(self.compile(gpu, spec, &key)?);
        let mut kernels = self.kernels.lock().unwrap_or_else(|p| p.into_inner());
        Ok(kernels.entry(key).or_insert(kernel).clone())
    }

    fn module(&self, gpu: &Gpu, shader: &'static str) -> Result<wgpu::ShaderModule> {
        let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = modules.get(shader) {
            return Ok(m.clone());
        }
        let source = crate::shaders::source(shader)
            .ok_or_else(|| Error::invalid("pipeline", format!("no shader named {shader:?}")))?;
        let device = gpu.device();
        let module = gpu.scoped(&format!("compiling shader {shader}"), || {
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(shader),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            })
        })?;
        modules.insert(shader, module.clone());
        Ok(module)
    }

    fn compile(&self, gpu: &Gpu, spec: &KernelSpec, key: &str) -> Result<Kernel> {
        let module = self.module(gpu, spec.shader)?;
        let device = gpu.device();
        let entries: Vec<wgpu::BindGroupLayoutEntry> = spec
            .bindings
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: match b {
                    Binding::Read | Binding::ReadWrite => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage {
                            read_only: *b == Binding::Read,
                        },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    Binding::Uniform => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                },
                count: None,
            })
            .collect();
        let constants: Vec<(&str, f64)> = spec.constants.clone();
        let started = web_time_now();
        let (pipeline, layout) = gpu.scoped(&format!("creating pipeline {key}"), || {
            let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(key),
                entries: &entries,
            });
            let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(key),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
            let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(key),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(spec.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
            (pipeline, layout)
        })?;
        if let Some(t) = started {
            log::debug!(
                "cenet: compiled {key} in {:.0} ms",
                t.elapsed().as_secs_f64() * 1e3
            );
        }
        Ok(Kernel {
            pipeline,
            layout,
            bindings: spec.bindings,
            name: key.to_string(),
        })
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn web_time_now() -> Option<std::time::Instant> {
    Some(std::time::Instant::now())
}

#[cfg(target_arch = "wasm32")]
fn web_time_now() -> Option<std::time::Instant> {
    None
}
