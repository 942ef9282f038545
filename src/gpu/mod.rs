//! The wgpu context: adapter choice, device limits, error scopes, the buffer pool and the
//! pipeline cache. Every kernel and tensor goes through a [`Gpu`].

mod adapter;
mod choices;
mod pipeline;
pub(crate) mod pool;

use std::sync::{Arc, Mutex};

pub use adapter::{AdapterChoice, AdapterSummary, Tuning};
pub use choices::KernelSearch;
pub use pipeline::{Binding, Kernel, KernelSpec};

use crate::error::{Error, Result};
use choices::KernelChoices;
use pipeline::PipelineCache;
use pool::BufferPool;

/// A device and queue with cenet's caches. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Gpu {
    inner: Arc<GpuInner>,
}

pub(crate) struct GpuInner {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    adapter: AdapterSummary,
    tuning: Tuning,
    choices: KernelChoices,
    limits: wgpu::Limits,
    pipelines: PipelineCache,
    pool: Arc<BufferPool>,
    uncaptured: Arc<Mutex<Option<String>>>,
    allocations: std::sync::atomic::AtomicU64,
}

impl Gpu {
    /// Opens the best adapter available (discrete, then integrated, then software), honouring
    /// `CENET_BACKEND` (vulkan, metal, dx12, gl, webgpu) and `CENET_ADAPTER` (a substring of
    /// the adapter's name). Blocks; on the web use [`Gpu::new_async`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new() -> Result<Self> {
        pollster::block_on(Self::new_async(AdapterChoice::from_env()))
    }

    /// Opens an adapter as `choice` asks.
    pub async fn new_async(choice: AdapterChoice) -> Result<Self> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: choice.backends(),
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        let adapter = adapter::select(&instance, &choice).await?;
        let summary = AdapterSummary::of(&adapter);
        let tuning = choice.tuning.unwrap_or(Tuning::for_adapter(&summary));
        let choices = KernelChoices::open(&choice.search, &summary);
        match choices.file() {
            Some(file) => log::info!(
                "cenet: using {summary}, {tuning:?} tuning, kernel choices measured into {}",
                file.display()
            ),
            None => log::info!("cenet: using {summary}, {tuning:?} tuning"),
        }
        if let Some(advice) = summary.advice() {
            log::warn!("cenet: {summary} is {advice}");
        }

        // Ask for everything the adapter offers instead of wgpu's conservative defaults, so
        // large tensors and big workgroups work where the hardware allows them.
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("cenet"),
                required_features: wgpu::Features::empty(),
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::DeviceRequest {
                adapter: summary.name.clone(),
                reason: e.to_string(),
            })?;

        // wgpu's default handler panics; keep the message so the next scope check reports it.
        let uncaptured = Arc::new(Mutex::new(None));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            log::error!("cenet: uncaptured GPU error: {e}");
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| e.to_string());
        }));

        Ok(Gpu {
            inner: Arc::new(GpuInner {
                pipelines: PipelineCache::default(),
                pool: Arc::new(BufferPool::default()),
                device,
                queue,
                adapter: summary,
                tuning,
                choices,
                limits,
                uncaptured,
                allocations: Default::default(),
            }),
        })
    }

    /// The wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }

    /// The chosen adapter's name, backend and type.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.inner.adapter
    }

    /// Which kernel variants this device runs.
    pub fn tuning(&self) -> Tuning {
        self.inner.tuning
    }

    /// Whether this device measures which convolution kernel runs each product fastest (see
    /// [`KernelSearch`]).
    pub fn searches_kernels(&self) -> bool {
        self.inner.choices.enabled()
    }

    /// The kernel choices known to this device, measured in this run or loaded from its file,
    /// as (product, kernel) pairs.
    pub fn kernel_choices(&self) -> Vec<(String, String)> {
        self.inner.choices.all()
    }

    /// How many kernel choices this device has measured itself (not loaded from a file).
    pub fn kernel_choices_measured(&self) -> usize {
        self.inner.choices.measured()
    }

    pub(crate) fn choices(&self) -> &KernelChoices {
        &self.inner.choices
    }

    /// The limits the device was opened with (the adapter's own).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.limits
    }

    /// Largest buffer one storage binding may cover, in bytes.
    pub fn max_binding_bytes(&self) -> u64 {
        self.inner
            .limits
            .max_storage_buffer_binding_size
            .min(self.inner.limits.max_buffer_size)
    }

    /// Checks that a buffer of `bytes` can be bound as storage; `what` names it in the error.
    pub fn check_binding_size(&self, what: &str, bytes: u64) -> Result<()> {
        let limit = self.max_binding_bytes();
        if bytes > limit {
            return Err(Error::TooLarge {
                what: what.to_string(),
                bytes,
                limit,
            });
        }
        Ok(())
    }

    /// Runs `f` inside a validation and out-of-memory error scope and turns anything wgpu
    /// reports into [`Error::Gpu`]. `during` says what was being done.
    pub fn scoped<T>(&self, during: &str, f: impl FnOnce() -> T) -> Result<T> {
        // On the web a popped scope's error arrives in a promise after a round trip, which
        // `block_on` cannot wait for, and an error a scope caught never reaches the
        // uncaptured handler: a shader the browser rejects would go unreported. So there no
        // scope is pushed, and errors are reported by the handler, here or at a later call.
        #[cfg(target_arch = "wasm32")]
        {
            let value = f();
            self.take_uncaptured(during)?;
            Ok(value)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            let oom = self
                .inner
                .device
                .push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            let validation = self
                .inner
                .device
                .push_error_scope(wgpu::ErrorFilter::Validation);
            let value = f();
            let validation = pollster::block_on(validation.pop());
            let oom = pollster::block_on(oom.pop());
            if let Some(e) = validation.or(oom) {
                return Err(Error::Gpu {
                    during: during.to_string(),
                    message: e.to_string(),
                });
            }
            self.take_uncaptured(during)?;
            Ok(value)
        }
    }

    /// Returns an error if wgpu reported one outside any scope since the last check.
    pub fn take_uncaptured(&self, during: &str) -> Result<()> {
        let mut slot = self
            .inner
            .uncaptured
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match slot.take() {
            Some(message) => Err(Error::Gpu {
                during: during.to_string(),
                message,
            }),
            None => Ok(()),
        }
    }

    /// The compute pipeline for `spec`, compiled once per device.
    pub(crate) fn pipeline(&self, spec: &KernelSpec) -> Result<Arc<pipeline::Kernel>> {
        self.inner.pipelines.get_or_create(self, spec)
    }

    /// Number of distinct pipelines compiled so far.
    pub fn pipelines_compiled(&self) -> usize {
        self.inner.pipelines.len()
    }

    pub(crate) fn pool(&self) -> &Arc<BufferPool> {
        &self.inner.pool
    }

    /// Bytes currently held by the buffer pool, free for reuse.
    pub fn pooled_bytes(&self) -> u64 {
        self.inner.pool.free_bytes()
    }

    /// Counts a GPU buffer created by cenet (tensors, parameter blocks, staging buffers).
    pub(crate) fn note_allocation(&self) {
        self.inner
            .allocations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// GPU buffers cenet has created on this device so far (pooled reuse does not count):
    /// a steady-state training step adds none.
    pub fn buffers_created(&self) -> u64 {
        self.inner
            .allocations
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until the queue is idle (native); a no-op on the web.
    pub fn wait_idle(&self) -> Result<()> {
        #[cfg(not(target_arch = "wasm32"))]
        self.inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu {
                during: "waiting for the queue".into(),
                message: e.to_string(),
            })?;
        Ok(())
    }
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("adapter", &self.inner.adapter)
            .finish()
    }
}
