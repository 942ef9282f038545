//! Which adapter to open: the best one by device type, or one the user names.

use std::fmt;

use crate::error::{Error, Result};

/// What the user asked for when opening a device.
#[derive(Clone, Debug, Default)]
pub struct AdapterChoice {
    /// Restrict to one backend; `None` tries every backend compiled in.
    pub backend: Option<wgpu::Backend>,
    /// Keep only adapters whose name contains this (case-insensitive).
    pub name: Option<String>,
    /// Which kernel variants to run; `None` picks by the adapter's type.
    pub tuning: Option<Tuning>,
    /// Whether and where to measure kernel choices.
    pub search: super::KernelSearch,
}

/// Which family of kernel variants suits an adapter, where two run the same arithmetic in
/// differently shaped work (see `shaders/conv2d_gemm.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tuning {
    /// A software rasteriser such as lavapipe: the CPU runs a workgroup's lanes as SIMD
    /// vectors, a load whose address differs across lanes costs a loop over them, and large
    /// per-thread tiles live in cache rather than registers. Favours workgroups whose threads
    /// share their reads of staged data and each compute a large block of the output.
    Cpu,
    /// A hardware GPU: favours shared-memory tiles and per-thread blocks that fit registers.
    Gpu,
}

impl Tuning {
    /// The tuning an adapter gets unless the user chose one: `Cpu` for a software adapter
    /// reached natively (lavapipe, where the CPU kernels were measured), `Gpu` otherwise. In
    /// a browser the software adapter (SwiftShader under Chromium) compiles shaders with a
    /// JIT of its own, which took minutes over the large unrolled blocks of the CPU
    /// kernels, so it keeps the GPU ones.
    pub fn for_adapter(adapter: &AdapterSummary) -> Self {
        let native = adapter.backend != wgpu::Backend::BrowserWebGpu;
        if adapter.device_type == wgpu::DeviceType::Cpu && native {
            Tuning::Cpu
        } else {
            Tuning::Gpu
        }
    }

    /// Parses `cpu` or `gpu` as users write them.
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "cpu" | "software" => Some(Tuning::Cpu),
            "gpu" | "hardware" => Some(Tuning::Gpu),
            _ => None,
        }
    }
}

impl AdapterChoice {
    /// Reads `CENET_BACKEND`, `CENET_ADAPTER`, `CENET_TUNING` (`cpu` or `gpu`) and
    /// `CENET_AUTOTUNE` (`1` or `0`: measure kernel choices or not; see
    /// [`KernelSearch`](super::KernelSearch)). An unknown name is logged and ignored rather
    /// than failing, so a typo does not stop training.
    pub fn from_env() -> Self {
        let backend = std::env::var("CENET_BACKEND").ok().and_then(|b| {
            let parsed = parse_backend(&b);
            if parsed.is_none() {
                log::warn!(
                    "cenet: CENET_BACKEND={b:?} is not one of vulkan, metal, dx12, gl, webgpu"
                );
            }
            parsed
        });
        let name = std::env::var("CENET_ADAPTER")
            .ok()
            .filter(|s| !s.is_empty());
        let tuning = std::env::var("CENET_TUNING").ok().and_then(|t| {
            let parsed = Tuning::parse(&t);
            if parsed.is_none() {
                log::warn!("cenet: CENET_TUNING={t:?} is not one of cpu, gpu");
            }
            parsed
        });
        let search = super::KernelSearch {
            enabled: std::env::var("CENET_AUTOTUNE").ok().and_then(|v| {
                let parsed = parse_switch(&v);
                if parsed.is_none() {
                    log::warn!("cenet: CENET_AUTOTUNE={v:?} is not one of 1, 0, on, off");
                }
                parsed
            }),
            ..Default::default()
        };
        AdapterChoice {
            backend,
            name,
            tuning,
            search,
        }
    }

    pub(crate) fn backends(&self) -> wgpu::Backends {
        match self.backend {
            Some(b) => wgpu::Backends::from(b),
            None => wgpu::Backends::all(),
        }
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(b) = self.backend {
            parts.push(format!("backend {b:?}"));
        }
        if let Some(n) = &self.name {
            parts.push(format!("name containing {n:?}"));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(" matching {}", parts.join(" and "))
        }
    }
}

/// Parses an on/off switch as users write it.
fn parse_switch(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "on" | "yes" | "true" => Some(true),
        "0" | "off" | "no" | "false" => Some(false),
        _ => None,
    }
}

/// Parses a backend name as users write it.
pub fn parse_backend(name: &str) -> Option<wgpu::Backend> {
    match name.trim().to_ascii_lowercase().as_str() {
        "vulkan" | "vk" => Some(wgpu::Backend::Vulkan),
        "metal" | "mtl" => Some(wgpu::Backend::Metal),
        "dx12" | "d3d12" => Some(wgpu::Backend::Dx12),
        "gl" | "gles" | "opengl" => Some(wgpu::Backend::Gl),
        "webgpu" | "browser" => Some(wgpu::Backend::BrowserWebGpu),
        _ => None,
    }
}

/// The adapter in use, as reported to users and benchmarks.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    /// The adapter's name, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)".
    pub name: String,
    /// The graphics API behind it.
    pub backend: wgpu::Backend,
    /// Discrete, integrated, virtual, CPU or other.
    pub device_type: wgpu::DeviceType,
    /// Driver name and version, when the backend reports them.
    pub driver: String,
}

impl AdapterSummary {
    /// Advice for an adapter that works but that cenet runs poorly: a software rasteriser
    /// reached through OpenGL, chosen when no Vulkan driver is installed. wgpu's GL backend
    /// serves compute less well than its Vulkan one (the same llvmpipe through Vulkan is
    /// lavapipe), and under test threads it has panicked inside wgpu-hal.
    pub fn advice(&self) -> Option<&'static str> {
        let software_gl =
            self.backend == wgpu::Backend::Gl && self.device_type == wgpu::DeviceType::Cpu;
        software_gl.then_some(
            "a software OpenGL adapter: install Mesa's software Vulkan driver (Debian/Ubuntu: \
             `apt-get install mesa-vulkan-drivers`) to run on lavapipe instead",
        )
    }

    pub(crate) fn of(adapter: &wgpu::Adapter) -> Self {
        let info = adapter.get_info();
        let driver = format!("{} {}", info.driver, info.driver_info)
            .trim()
            .to_string();
        AdapterSummary {
            name: info.name,
            backend: info.backend,
            device_type: info.device_type,
            driver,
        }
    }

    /// True for software rasterisers such as lavapipe or SwiftShader.
    pub fn is_software(&self) -> bool {
        self.device_type == wgpu::DeviceType::Cpu
    }
}

impl fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({:?}, {:?}",
            self.name, self.backend, self.device_type
        )?;
        if !self.driver.is_empty() {
            write!(f, ", {}", self.driver)?;
        }
        write!(f, ")")
    }
}

const INSTALL_HINT: &str = "Install a GPU driver with Vulkan, Metal or DX12 support; on Linux \
    without a GPU, install Mesa's software Vulkan driver (Debian/Ubuntu: `apt-get install \
    mesa-vulkan-drivers`). CENET_BACKEND and CENET_ADAPTER narrow the choice; unset them to \
    let cenet pick.";

fn rank(device_type: wgpu::DeviceType) -> u8 {
    match device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

pub(crate) async fn select(
    instance: &wgpu::Instance,
    choice: &AdapterChoice,
) -> Result<wgpu::Adapter> {
    let no_adapter = || Error::NoAdapter {
        detail: choice.describe(),
        hint: INSTALL_HINT,
    };

    // The browser exposes one adapter through requestAdapter; enumeration is native-only.
    if cfg!(target_arch = "wasm32") || choice.backend == Some(wgpu::Backend::BrowserWebGpu) {
        let options = wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            force_fallback_adapter: false,
            ..Default::default()
        };
        return instance
            .request_adapter(&options)
            .await
            .map_err(|_| no_adapter());
    }

    let mut adapters: Vec<wgpu::Adapter> = instance
        .enumerate_adapters(choice.backends())
        .await
        .into_iter()
        .filter(|a| {
            a.get_downlevel_capabilities()
                .flags
                .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
        })
        .filter(|a| match &choice.name {
            Some(n) => a.get_info().name.to_lowercase().contains(&n.to_lowercase()),
            None => true,
        })
        .collect();
    for a in &adapters {
        log::debug!("cenet: candidate adapter {}", AdapterSummary::of(a));
    }
    // Stable sort: among equals, keep wgpu's order (which lists Vulkan before GL).
    adapters.sort_by_key(|a| {
        let info = a.get_info();
        (rank(info.device_type), info.backend == wgpu::Backend::Gl)
    });
    adapters.into_iter().next().ok_or_else(no_adapter)
}
