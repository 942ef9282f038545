//! Host side of every op family: checks shapes, picks the shader variant and workgroup
//! layout, binds buffers and records dispatches into a [`Recorder`]. No graph knowledge.
//!
//! Each op has a recording form (`*_into` or taking a `&mut Recorder`) that writes into
//! tensors the caller owns, which is what the graph executor uses, and most have a
//! convenience form that allocates its outputs and submits at once.

pub mod activation;
pub mod batchnorm;
pub mod ce;
pub mod conv;
pub mod linear;
pub mod loss;
pub mod pool;
pub mod sgd;

use std::sync::Arc;

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::gpu::{Binding, Gpu, KernelSpec};
use crate::tensor::Tensor;

/// One piece of recorded work.
enum Command {
    Dispatch {
        kernel: Arc<crate::gpu::Kernel>,
        bind_group: wgpu::BindGroup,
        groups: [u32; 3],
    },
    Copy {
        from: wgpu::Buffer,
        to: wgpu::Buffer,
        bytes: u64,
    },
    Clear {
        buffer: wgpu::Buffer,
    },
    CopyToBuffer {
        from: wgpu::Buffer,
        to: wgpu::Buffer,
        offset: u64,
        bytes: u64,
    },
}

/// Collects dispatches and copies, then encodes them into one command encoder and submits
/// them once. Consecutive dispatches share one compute pass; wgpu orders their storage
/// accesses.
pub struct Recorder<'g> {
    gpu: &'g Gpu,
    commands: Vec<Command>,
    dispatches: usize,
    scratch: Vec<Tensor>,
    pins: Pins,
}

/// Buffers pinned in the pool while recorded work that binds them is not yet submitted.
#[derive(Default)]
struct Pins {
    buffers: Vec<wgpu::Buffer>,
    pool: Option<Arc<crate::gpu::pool::BufferPool>>,
}

impl Pins {
    fn add(&mut self, gpu: &Gpu, buffers: &[&wgpu::Buffer]) {
        let pool = self.pool.get_or_insert_with(|| gpu.pool().clone());
        let owned: Vec<wgpu::Buffer> = buffers.iter().map(|b| (*b).clone()).collect();
        pool.pin(&owned);
        self.buffers.extend(owned);
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            pool.unpin(&self.buffers);
        }
    }
}

impl<'g> Recorder<'g> {
    /// An empty recorder on `gpu`.
    pub fn new(gpu: &'g Gpu) -> Self {
        Recorder {
            gpu,
            commands: Vec::new(),
            dispatches: 0,
            scratch: Vec::new(),
            pins: Pins::default(),
        }
    }

    /// The device this recorder records for.
    pub fn gpu(&self) -> &'g Gpu {
        self.gpu
    }

    /// Number of dispatches recorded so far.
    pub fn dispatch_count(&self) -> usize {
        self.dispatches
    }

    /// Records one dispatch of `spec` over `groups` workgroups with `buffers` bound in order
    /// to its storage bindings and `params` (a `#[repr(C)]` struct of 4-byte fields) to its
    /// uniform binding, which must be the last.
    pub fn dispatch<P: bytemuck::Pod>(
        &mut self,
        spec: &KernelSpec,
        buffers: &[&wgpu::Buffer],
        params: Option<&P>,
        groups: [u32; 3],
    ) -> Result<()> {
        let kernel = self.gpu.pipeline(spec)?;
        let storage = kernel
            .bindings
            .iter()
            .filter(|b| **b != Binding::Uniform)
            .count();
        if storage != buffers.len()
            || params.is_some() != kernel.bindings.contains(&Binding::Uniform)
        {
            panic!(
                "{}: bound {} buffers for {} storage bindings",
                kernel.name,
                buffers.len(),
                storage
            );
        }
        if groups.contains(&0) {
            return Ok(());
        }
        let max = self.gpu.limits().max_compute_workgroups_per_dimension;
        if groups.iter().any(|&g| g > max) {
            return Err(Error::invalid(
                "dispatch",
                format!(
                    "{} needs {groups:?} workgroups, over the device limit of {max}",
                    kernel.name
                ),
            ));
        }

        let device = self.gpu.device();
        let uniform = params.map(|p| {
            self.gpu.note_allocation();
            // Uniform structs are sized in multiples of 16 bytes.
            let mut bytes = bytemuck::bytes_of(p).to_vec();
            bytes.resize(bytes.len().next_multiple_of(16).max(16), 0);
            device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("cenet params"),
                contents: &bytes,
                usage: wgpu::BufferUsages::UNIFORM,
            })
        });
        let mut entries = Vec::with_capacity(kernel.bindings.len());
        let mut next = buffers.iter();
        for (i, b) in kernel.bindings.iter().enumerate() {
            let resource = match b {
                Binding::Uniform => uniform.as_ref().expect("checked above").as_entire_binding(),
                _ => next.next().expect("checked above").as_entire_binding(),
            };
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32,
                resource,
            });
        }
        let bind_group = self.gpu.scoped(&format!("binding {}", kernel.name), || {
            device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(&kernel.name),
                layout: &kernel.layout,
                entries: &entries,
            })
        })?;
        self.pins.add(self.gpu, buffers);
        self.commands.push(Command::Dispatch {
            kernel,
            bind_group,
            groups,
        });
        self.dispatches += 1;
        Ok(())
    }

    /// A temporary tensor that lives until this recorder is submitted or dropped, so its
    /// buffer cannot be handed to another tensor while recorded work still uses it.
    pub fn scratch(&mut self, shape: &[usize], what: &str) -> Result<Tensor> {
        let t = Tensor::uninit(self.gpu, shape, crate::tensor::DType::F32, what)?;
        self.scratch.push(t.clone());
        Ok(t)
    }

    /// Records a copy of `from` into `to` (equal element counts).
    pub fn copy(&mut self, from: &Tensor, to: &Tensor) -> Result<()> {
        if from.len() != to.len() {
            return Err(Error::shape(
                "copy",
                "destination",
                to.shape(),
                from.shape(),
            ));
        }
        let bytes = from.len() as u64 * 4;
        if bytes > 0 {
            self.pins.add(self.gpu, &[from.buffer(), to.buffer()]);
            self.commands.push(Command::Copy {
                from: from.buffer().clone(),
                to: to.buffer().clone(),
                bytes,
            });
        }
        Ok(())
    }

    /// Records a copy of `from` into `to` at byte `offset` (a staging buffer for readback).
    pub fn copy_to_buffer(&mut self, from: &Tensor, to: &wgpu::Buffer, offset: u64) {
        let bytes = from.len() as u64 * 4;
        if bytes > 0 {
            self.pins.add(self.gpu, &[from.buffer()]);
            self.commands.push(Command::CopyToBuffer {
                from: from.buffer().clone(),
                to: to.clone(),
                offset,
                bytes,
            });
        }
    }

    /// Records filling `t` with zeros.
    pub fn clear(&mut self, t: &Tensor) {
        self.pins.add(self.gpu, &[t.buffer()]);
        self.commands.push(Command::Clear {
            buffer: t.buffer().clone(),
        });
    }

    /// Encodes everything into one command encoder, without submitting it. The scratch
    /// tensors return to the pool at once, so submit the result before recording more work
    /// on any thread; [`Recorder::submit`] and [`Recorder::into_program`] keep them longer.
    pub fn finish(self) -> Result<wgpu::CommandBuffer> {
        let gpu = self.gpu;
        let program = self.into_program();
        gpu.scoped("encoding commands", || {
            let mut encoder =
                gpu.device()
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("cenet"),
                    });
            program.encode(&mut encoder);
            encoder.finish()
        })
    }

    /// The recorded work as a [`Program`] that can be encoded again and again: its bind
    /// groups, parameter buffers and scratch tensors are created once, here.
    pub fn into_program(self) -> Program {
        Program {
            commands: self.commands,
            scratch: self.scratch,
            dispatches: self.dispatches,
            pins: self.pins,
        }
    }

    /// Encodes and submits everything in one submission.
    pub fn submit(self) -> Result<()> {
        let gpu = self.gpu;
        let program = self.into_program();
        gpu.scoped("submitting commands", || {
            let mut encoder =
                gpu.device()
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("cenet"),
                    });
            program.encode(&mut encoder);
            gpu.queue().submit([encoder.finish()]);
        })?;
        // Scratch tensors go back to the pool only now. Released before the submission, a
        // buffer could be taken by another thread and filled with `write_buffer`, which
        // runs at the next submission on the queue: this one, which would overwrite it.
        drop(program);
        Ok(())
    }
}

/// Time spent in one kernel (or in copies or clears) by [`Program::profile`].
#[derive(Clone, Debug)]
pub struct KernelTime {
    /// The kernel's name (shader and entry point, with its specialisation), `copy` or
    /// `clear`.
    pub name: String,
    /// Wall-clock milliseconds over all its dispatches.
    pub ms: f64,
    /// How many dispatches it had.
    pub count: usize,
}

/// Recorded work, ready to be encoded into any number of command encoders. Replaying a
/// program allocates nothing: a training step writes its inputs with `Queue::write_buffer`
/// and encodes the same program again.
pub struct Program {
    commands: Vec<Command>,
    // Keeps temporaries alive (and out of the pool) for as long as the program can run.
    #[allow(dead_code)]
    scratch: Vec<Tensor>,
    dispatches: usize,
    // Unpinned when the program is dropped: after its submission, for a one-off recording.
    #[allow(dead_code)]
    pins: Pins,
}

impl Program {
    /// Number of dispatches the program records.
    pub fn dispatch_count(&self) -> usize {
        self.dispatches
    }

    /// Runs the program once command by command, each in its own submission waited for,
    /// and returns the wall-clock time of each dispatch summed by kernel name, slowest
    /// first (native only). For finding where a step's time goes; the per-dispatch waits
    /// make the total larger than a normal run's.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn profile(&self, gpu: &Gpu) -> Result<Vec<KernelTime>> {
        let mut times: Vec<KernelTime> = Vec::new();
        gpu.wait_idle()?;
        for command in &self.commands {
            let mut encoder =
                gpu.device()
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("cenet profile"),
                    });
            Program::encode_commands(std::slice::from_ref(command), &mut encoder);
            let start = std::time::Instant::now();
            gpu.queue().submit([encoder.finish()]);
            gpu.wait_idle()?;
            let ms = start.elapsed().as_secs_f64() * 1e3;
            let name = match command {
                Command::Dispatch { kernel, .. } => kernel.name.clone(),
                Command::Copy { .. } | Command::CopyToBuffer { .. } => "copy".to_string(),
                Command::Clear { .. } => "clear".to_string(),
            };
            match times.iter_mut().find(|t| t.name == name) {
                Some(t) => {
                    t.ms += ms;
                    t.count += 1;
                }
                None => times.push(KernelTime { name, ms, count: 1 }),
            }
        }
        times.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        Ok(times)
    }

    /// Encodes the program; consecutive dispatches share one compute pass.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder) {
        Program::encode_commands(&self.commands, encoder);
    }

    fn encode_commands(commands: &[Command], encoder: &mut wgpu::CommandEncoder) {
        let mut i = 0;
        while i < commands.len() {
            match &commands[i] {
                Command::Dispatch { .. } => {
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: None,
                        timestamp_writes: None,
                    });
                    while let Some(Command::Dispatch {
                        kernel,
                        bind_group,
                        groups,
                    }) = commands.get(i)
                    {
                        pass.set_pipeline(&kernel.pipeline);
                        pass.set_bind_group(0, bind_group, &[]);
                        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
                        i += 1;
                    }
                }
                Command::Copy { from, to, bytes } => {
                    encoder.copy_buffer_to_buffer(from, 0, to, 0, *bytes);
                    i += 1;
                }
                Command::CopyToBuffer {
                    from,
                    to,
                    offset,
                    bytes,
                } => {
                    encoder.copy_buffer_to_buffer(from, 0, to, *offset, *bytes);
                    i += 1;
                }
                Command::Clear { buffer } => {
                    encoder.clear_buffer(buffer, 0, None);
                    i += 1;
                }
            }
        }
    }
}

/// Workgroup counts for `total` workgroups, folded into a 2-D grid because one dimension is
/// capped (65,535 on most devices). Shaders recover the linear index as
/// `id.y * num_workgroups.x + id.x` and skip indices past the end.
pub fn grid(gpu: &Gpu, total: u32) -> [u32; 3] {
    let max = gpu.limits().max_compute_workgroups_per_dimension.max(1);
    if total <= max {
        [total, 1, 1]
    } else {
        let y = total.div_ceil(max);
        [total.div_ceil(y), y, 1]
    }
}

/// Workgroups needed for `n` items at `per_group` items each, as a folded grid.
pub fn grid_for(gpu: &Gpu, n: usize, per_group: usize) -> [u32; 3] {
    grid(gpu, n.div_ceil(per_group) as u32)
}

/// Checks that `t` has exactly `expected` as its shape, naming `op` and `what` otherwise.
pub fn expect_shape(op: &'static str, what: &str, t: &Tensor, expected: &[usize]) -> Result<()> {
    if t.shape() != expected {
        return Err(Error::shape(op, what, t.shape(), expected));
    }
    Ok(())
}

/// Checks that `t` is 4-D (N, C, H, W) and returns its dimensions.
pub fn expect_nchw(op: &'static str, what: &str, t: &Tensor) -> Result<[usize; 4]> {
    match t.shape() {
        &[n, c, h, w] => Ok([n, c, h, w]),
        other => Err(Error::invalid(
            op,
            format!("{what} must be 4-D [N, C, H, W], got {other:?}"),
        )),
    }
}
