//! Tensors: a GPU storage buffer with a shape.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::pool::PooledBuffer;
use crate::gpu::Gpu;

/// Element type of a tensor's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 32-bit unsigned integer (class labels, pooling indices).
    U32,
}

/// A dense, row-major tensor in GPU memory. Cloning shares the buffer.
#[derive(Clone)]
pub struct Tensor {
    buffer: Arc<PooledBuffer>,
    shape: Vec<usize>,
    dtype: DType,
}

impl Tensor {
    /// A tensor of `shape` with unspecified contents (reused memory is not cleared).
    /// `what` names the tensor in the error when it is too large for the device.
    pub fn uninit(gpu: &Gpu, shape: &[usize], dtype: DType, what: &str) -> Result<Self> {
        let elements: usize = shape.iter().product();
        let bytes = elements as u64 * 4;
        gpu.check_binding_size(&format!("{what} {shape:?}"), bytes)?;
        let buffer = gpu.pool().take(gpu, bytes);
        Ok(Tensor {
            buffer: Arc::new(buffer),
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// An f32 tensor of zeros.
    pub fn zeros(gpu: &Gpu, shape: &[usize]) -> Result<Self> {
        let t = Self::uninit(gpu, shape, DType::F32, "tensor")?;
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        encoder.clear_buffer(t.buffer(), 0, None);
        gpu.queue().submit([encoder.finish()]);
        Ok(t)
    }

    /// An f32 tensor holding `data`, which must have as many values as `shape` holds.
    pub fn from_slice(gpu: &Gpu, shape: &[usize], data: &[f32]) -> Result<Self> {
        Self::from_bytes(
            gpu,
            shape,
            DType::F32,
            bytemuck::cast_slice(data),
            data.len(),
        )
    }

    /// A u32 tensor holding `data` (labels, indices).
    pub fn from_u32(gpu: &Gpu, shape: &[usize], data: &[u32]) -> Result<Self> {
        Self::from_bytes(
            gpu,
            shape,
            DType::U32,
            bytemuck::cast_slice(data),
            data.len(),
        )
    }

    fn from_bytes(
        gpu: &Gpu,
        shape: &[usize],
        dtype: DType,
        bytes: &[u8],
        len: usize,
    ) -> Result<Self> {
        let expected: usize = shape.iter().product();
        if len != expected {
            return Err(Error::DataLength {
                what: "upload".into(),
                got: len,
                expected,
                shape: shape.to_vec(),
            });
        }
        let t = Self::uninit(gpu, shape, dtype, "upload")?;
        if !bytes.is_empty() {
            gpu.queue().write_buffer(t.buffer(), 0, bytes);
        }
        Ok(t)
    }

    /// Overwrites the contents with `data` (queued; ordered before later submissions).
    pub fn write(&self, gpu: &Gpu, data: &[f32]) -> Result<()> {
        if data.len() != self.len() {
            return Err(Error::DataLength {
                what: "write".into(),
                got: data.len(),
                expected: self.len(),
                shape: self.shape.clone(),
            });
        }
        if !data.is_empty() {
            gpu.queue()
                .write_buffer(self.buffer(), 0, bytemuck::cast_slice(data));
        }
        Ok(())
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the tensor holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same buffer seen with another shape of equal size.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if shape.iter().product::<usize>() != self.len() {
            return Err(Error::shape("reshape", "element count", shape, &self.shape));
        }
        Ok(Tensor {
            buffer: self.buffer.clone(),
            shape: shape.to_vec(),
            dtype: self.dtype,
        })
    }

    /// The same buffer seen as a smaller (or equal) tensor of `shape` and `dtype`: how the
    /// executor lays planned tensors over shared buffers.
    pub fn view(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let capacity = self.buffer().size() / 4;
        let elements: usize = shape.iter().product();
        if elements as u64 > capacity {
            return Err(Error::shape(
                "view",
                "elements over the buffer's capacity",
                shape,
                &[capacity as usize],
            ));
        }
        Ok(Tensor {
            buffer: self.buffer.clone(),
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// The underlying wgpu buffer.
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buffer.buffer()
    }

    /// Reads the contents back as f32 values (u32 tensors are reinterpreted bitwise).
    /// Works on every platform; on the web, await it from an async task.
    pub async fn read(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let bytes = read_buffer(gpu, self.buffer(), self.len() as u64 * 4).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Reads the contents back as u32 values.
    pub async fn read_u32(&self, gpu: &Gpu) -> Result<Vec<u32>> {
        let bytes = read_buffer(gpu, self.buffer(), self.len() as u64 * 4).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Blocking [`Tensor::read`], for native code and tests.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn to_vec(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        pollster::block_on(self.read(gpu))
    }

    /// Blocking [`Tensor::read_u32`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn to_vec_u32(&self, gpu: &Gpu) -> Result<Vec<u32>> {
        pollster::block_on(self.read_u32(gpu))
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {:?})", self.dtype, self.shape)
    }
}

/// Copies the first `bytes` of `buffer` to a staging buffer and maps it. Never blocks the
/// thread on the web; on native it polls the device until the copy is done.
pub async fn read_buffer(gpu: &Gpu, buffer: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
    if bytes == 0 {
        return Ok(Vec::new());
    }
    gpu.note_allocation();
    let staging = gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("cenet readback"),
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = gpu.device().create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, bytes);
    gpu.queue().submit([encoder.finish()]);

    let (sender, receiver) = futures::channel::oneshot::channel();
    staging.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = sender.send(r);
    });
    gpu.wait_idle()?;
    let mapped = receiver.await.map_err(|_| Error::Readback {
        what: "buffer".into(),
        reason: "the device was lost before the copy finished".into(),
    })?;
    mapped.map_err(|e| Error::Readback {
        what: "buffer".into(),
        reason: e.to_string(),
    })?;
    let view = staging.get_mapped_range(..).map_err(|e| Error::Readback {
        what: "buffer".into(),
        reason: e.to_string(),
    })?;
    let data = view.to_vec();
    drop(view);
    staging.unmap();
    gpu.take_uncaptured("reading back a buffer")?;
    Ok(data)
}
