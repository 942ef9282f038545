//! Reuse of storage buffers: a dropped tensor's buffer waits here for the next tensor of the
//! same size, so steady-state work allocates nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// Usage of every tensor buffer: bound as storage, filled by copies, read back by copies.
pub(crate) const TENSOR_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

#[derive(Default)]
pub(crate) struct BufferPool {
    free: Mutex<HashMap<u64, Vec<wgpu::Buffer>>>,
    /// Buffers bound in recorded work not yet submitted, with how many recordings hold
    /// each. A tensor dropped while its buffer is pinned goes back to the pool, but is not
    /// handed out again until the pin is released: a new owner's `write_buffer` would run
    /// at the next submission on the queue, before the recorded work that still reads it.
    pinned: Mutex<HashMap<wgpu::Buffer, usize>>,
}

impl BufferPool {
    /// A buffer of exactly `bytes` (rounded up to 4), reused when one is free.
    pub(crate) fn take(self: &Arc<Self>, gpu: &super::Gpu, bytes: u64) -> PooledBuffer {
        let device = gpu.device();
        let bytes = bytes.max(4).next_multiple_of(4);
        let reused = {
            let pinned = self.pinned.lock().unwrap_or_else(|p| p.into_inner());
            let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
            free.get_mut(&bytes).and_then(|list| {
                let i = list.iter().rposition(|b| !pinned.contains_key(b))?;
                Some(list.swap_remove(i))
            })
        };
        let buffer = reused.unwrap_or_else(|| {
            gpu.note_allocation();
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("cenet tensor"),
                size: bytes,
                usage: TENSOR_USAGE,
                mapped_at_creation: false,
            })
        });
        PooledBuffer {
            buffer: Some(buffer),
            pool: Arc::downgrade(self),
        }
    }

    /// Marks buffers as bound in work that has not been submitted yet.
    pub(crate) fn pin(&self, buffers: &[wgpu::Buffer]) {
        let mut pinned = self.pinned.lock().unwrap_or_else(|p| p.into_inner());
        for b in buffers {
            *pinned.entry(b.clone()).or_default() += 1;
        }
    }

    /// Releases what [`BufferPool::pin`] marked, once the work is submitted.
    pub(crate) fn unpin(&self, buffers: &[wgpu::Buffer]) {
        let mut pinned = self.pinned.lock().unwrap_or_else(|p| p.into_inner());
        for b in buffers {
            if let Some(count) = pinned.get_mut(b) {
                *count -= 1;
                if *count == 0 {
                    pinned.remove(b);
                }
            }
        }
    }

    pub(crate) fn free_bytes(&self) -> u64 {
        let free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        free.iter().map(|(size, v)| size * v.len() as u64).sum()
    }
}

/// A buffer that goes back to its pool when dropped.
pub(crate) struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    pool: Weak<BufferPool>,
}

impl PooledBuffer {
    pub(crate) fn buffer(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("buffer present until drop")
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let (Some(buffer), Some(pool)) = (self.buffer.take(), self.pool.upgrade()) {
            let mut free = pool.free.lock().unwrap_or_else(|p| p.into_inner());
            free.entry(buffer.size()).or_default().push(buffer);
        }
    }
}
