//! Choosing the compute backend at run time: wgpu (Vulkan / Metal / DX12) or a CPU backend.
//!
//! burn 0.22 selects the backend through the [`Device`] value, so one binary holds all of
//! them. wgpu is initialised through burn's fallible path (`Device::wgpu_options()…init()`),
//! never the lazy `Device::wgpu(..)`, which panics on first use when there is no adapter.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use burn::tensor::Device;
use burn::tensor::DeviceKind;
use burn::tensor::wgpu::{WgpuBackend, wgpu};

/// The compute backends `trainer` is built with.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// burn's wgpu backend: a GPU through Vulkan, Metal or DX12.
    Wgpu,
    /// burn's ndarray backend: the CPU, the backend burn users know.
    Ndarray,
    /// burn's flex backend: the CPU, burn's newer pure-Rust CPU backend, the default (2.5×
    /// faster than ndarray on the article's model, same results).
    Flex,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Wgpu => "wgpu",
            Self::Ndarray => "ndarray",
            Self::Flex => "flex",
        })
    }
}

/// The graphics API the wgpu backend runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WgpuApi {
    /// The platform's best: Metal on macOS; elsewhere Vulkan, else DX12, else OpenGL.
    Auto,
    /// Vulkan.
    Vulkan,
    /// Metal (macOS).
    Metal,
    /// DirectX 12 (Windows).
    Dx12,
}

impl WgpuApi {
    fn burn(self) -> WgpuBackend {
        match self {
            Self::Auto => WgpuBackend::Auto,
            Self::Vulkan => WgpuBackend::Vulkan,
            Self::Metal => WgpuBackend::Metal,
            Self::Dx12 => WgpuBackend::Dx12,
        }
    }

    /// The wgpu APIs to look at, best first (the order burn's runtime settles `Auto` in).
    fn candidates(self) -> Vec<wgpu::Backend> {
        match self {
            Self::Auto if cfg!(target_os = "macos") => vec![wgpu::Backend::Metal],
            Self::Auto => vec![
                wgpu::Backend::Vulkan,
                wgpu::Backend::Dx12,
                wgpu::Backend::Gl,
            ],
            Self::Vulkan => vec![wgpu::Backend::Vulkan],
            Self::Metal => vec![wgpu::Backend::Metal],
            Self::Dx12 => vec![wgpu::Backend::Dx12],
        }
    }
}

/// What the user asked for on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceRequest {
    /// Which backend.
    pub backend: BackendKind,
    /// For wgpu: which graphics API.
    pub api: WgpuApi,
    /// For wgpu: which adapter, as numbered by `trainer --list-devices`; `None` lets wgpu pick
    /// (a high-performance GPU first).
    pub index: Option<usize>,
    /// For wgpu: gather kernel launches into large submissions to the GPU, as the fused step's
    /// small dispatches want (burn's default suits its generic step better; see
    /// [`WGPU_TASKS_PER_SUBMISSION`]). A process sets up each adapter once: the first request
    /// decides.
    pub batched: bool,
}

/// Why no device could be had.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// wgpu found no adapter, or could not open the one found.
    #[error(
        "no usable GPU adapter for --backend wgpu ({api}): {reason}; use --backend flex (or ndarray) to train on the CPU"
    )]
    NoAdapter {
        /// The API asked for.
        api: String,
        /// burn's or wgpu's explanation.
        reason: String,
    },
    /// `--device N` is out of range.
    #[error(
        "--device {index}: there are {count} adapters for {api} (see `trainer --list-devices`)"
    )]
    NoSuchDevice {
        /// The index asked for.
        index: usize,
        /// How many adapters there are.
        count: usize,
        /// The API.
        api: String,
    },
    /// `--device` given with a CPU backend.
    #[error("--device selects a GPU adapter and only applies to --backend wgpu")]
    DeviceWithoutWgpu,
}

/// A description of the device training runs on, for the logs and the run record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceInfo {
    /// The backend.
    pub backend: BackendKind,
    /// Adapter name (for CPU backends, "cpu").
    pub name: String,
    /// Graphics API (for CPU backends, "none").
    pub api: String,
    /// Adapter type: discrete GPU, integrated GPU, CPU (a software rasteriser such as lavapipe) …
    pub kind: String,
    /// Driver name and version where the API reports them.
    pub driver: String,
}

/// An initialised device, ready for tensors.
#[derive(Debug, Clone)]
pub struct ReadyDevice {
    /// The burn device (without autodiff).
    pub device: Device,
    /// What it is.
    pub info: DeviceInfo,
}

/// Initialises the device `request` names.
///
/// For wgpu, a process initialises each (adapter, API) once and hands out the same device
/// afterwards: burn refuses to initialise a wgpu runtime twice.
pub fn init(request: DeviceRequest) -> Result<ReadyDevice, BackendError> {
    match request.backend {
        BackendKind::Wgpu => init_wgpu(request.api, request.index, request.batched),
        cpu if request.index.is_some() => {
            let _ = cpu;
            Err(BackendError::DeviceWithoutWgpu)
        }
        cpu => {
            let device = match cpu {
                #[allow(deprecated)] // burn deprecates ndarray in favour of flex; we offer both
                BackendKind::Ndarray => Device::ndarray(),
                _ => Device::flex(),
            };
            Ok(ReadyDevice {
                device,
                info: DeviceInfo {
                    backend: cpu,
                    name: "cpu".into(),
                    api: "none".into(),
                    kind: "Cpu".into(),
                    driver: String::new(),
                },
            })
        }
    }
}

/// One adapter wgpu can see, as `--list-devices` shows it.
#[derive(Debug, Clone)]
pub struct Adapter {
    /// wgpu's description of it.
    pub info: wgpu::AdapterInfo,
}

impl fmt::Display for Adapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.info;
        write!(
            f,
            "{} ({:?}, {:?}, driver {} {})",
            i.name, i.backend, i.device_type, i.driver, i.driver_info
        )
    }
}

/// The adapters of the API `api` settles on, in wgpu's enumeration order: for `Auto`, the first
/// API in the platform's chain with a hardware adapter, else the first with any adapter.
pub fn adapters(api: WgpuApi) -> (wgpu::Backend, Vec<Adapter>) {
    let candidates = api.candidates();
    let mut software_only = None;
    for backend in &candidates {
        let found = enumerate(*backend);
        if found
            .iter()
            .any(|a| a.info.device_type != wgpu::DeviceType::Cpu)
        {
            return (*backend, found);
        }
        if software_only.is_none() && !found.is_empty() {
            software_only = Some((*backend, found));
        }
    }
    software_only.unwrap_or((candidates[0], Vec::new()))
}

fn enumerate(backend: wgpu::Backend) -> Vec<Adapter> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: backend.into(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    pollster_block_on(instance.enumerate_adapters(backend.into()))
        .iter()
        .map(|a| Adapter { info: a.get_info() })
        .collect()
}

/// Maps the `index`-th adapter of a list (given by the adapters' types) to burn's numbering,
/// which counts each adapter type from zero.
fn device_kind(types: &[wgpu::DeviceType], index: usize) -> DeviceKind {
    let ty = types[index];
    let nth = types[..index].iter().filter(|t| **t == ty).count();
    match ty {
        wgpu::DeviceType::DiscreteGpu => DeviceKind::DiscreteGpu(nth),
        wgpu::DeviceType::IntegratedGpu => DeviceKind::IntegratedGpu(nth),
        wgpu::DeviceType::VirtualGpu => DeviceKind::VirtualGpu(nth),
        wgpu::DeviceType::Cpu => DeviceKind::Cpu,
        wgpu::DeviceType::Other => DeviceKind::DefaultDevice,
    }
}

/// Kernel launches and uploads a batched wgpu device gathers into one submission to the GPU.
/// A fused step is a handful of small dispatches, and each submission has a cost of its own:
/// on lavapipe the article's MLP trains about a quarter faster with 512 than with burn's
/// default of 32, while burn's generic step, whose steps are many more launches, slows down.
pub const WGPU_TASKS_PER_SUBMISSION: usize = 512;

type WgpuKey = (WgpuApi, Option<usize>);
static WGPU_DEVICES: Mutex<Option<HashMap<WgpuKey, ReadyDevice>>> = Mutex::new(None);

fn init_wgpu(
    api: WgpuApi,
    index: Option<usize>,
    batched: bool,
) -> Result<ReadyDevice, BackendError> {
    let mut cache = WGPU_DEVICES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some(ready) = cache.get(&(api, index)) {
        return Ok(ready.clone());
    }
    let api_name = format!("{api:?}").to_lowercase();
    let no_adapter = |reason: String| BackendError::NoAdapter {
        api: api_name.clone(),
        reason,
    };
    keep_compiled_kernels();
    let mut options = Device::wgpu_options().graphics_api(api.burn());
    // CUBECL_WGPU_MAX_TASKS, when set, still decides.
    if batched && std::env::var_os("CUBECL_WGPU_MAX_TASKS").is_none() {
        options = options.tasks_max(WGPU_TASKS_PER_SUBMISSION);
    }
    if let Some(index) = index {
        let (backend, found) = adapters(api);
        if index >= found.len() {
            return Err(BackendError::NoSuchDevice {
                index,
                count: found.len(),
                api: format!("{backend:?}"),
            });
        }
        let types: Vec<_> = found.iter().map(|a| a.info.device_type).collect();
        options = options.device_kind(device_kind(&types, index));
    }
    let (device, setup) = options
        .init_with_setup()
        .map_err(|e| no_adapter(e.to_string()))?;
    let info = setup.adapter.get_info();
    let ready = ReadyDevice {
        device,
        info: DeviceInfo {
            backend: BackendKind::Wgpu,
            name: info.name.clone(),
            api: format!("{:?}", info.backend),
            kind: format!("{:?}", info.device_type),
            driver: format!("{} {}", info.driver, info.driver_info)
                .trim()
                .to_string(),
        },
    };
    cache.insert((api, index), ready.clone());
    Ok(ready)
}

/// Keeps what cubecl learns about this machine (autotune's choices, compiled kernels) on disk in
/// the per-user cache (`~/.cache/cubecl` on Linux), so that a second run neither tunes nor
/// compiles again. cubecl's own default is a `target/` directory next to the outermost
/// `Cargo.toml` above the working directory, and no kernel cache: right for burn's developers,
/// not for a tool run from anywhere. A `cubecl.toml` (or `burn.toml`) the user wrote, and
/// cubecl's environment variables (`CUBECL_AUTOTUNE_CACHE=0` …), still apply over this.
fn keep_compiled_kernels() {
    use burn::cubecl::config::cache::CacheConfig;
    use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
    let mut config = CubeClRuntimeConfig::default();
    config.compilation.cache = true;
    config.environment.path = CacheConfig::Global;
    let found = CubeClRuntimeConfig::from_current_dir();
    // A configuration file of the user's wins whole: compare it with cubecl's default.
    let user_file = toml_of(&found) != toml_of(&CubeClRuntimeConfig::default());
    let config = if user_file { found } else { config }.override_from_env();
    // Only the first call sets it (tests initialise several devices in one process).
    CubeClRuntimeConfig::try_set(config);
}

/// A configuration's settings, for telling a user's file from cubecl's default.
fn toml_of(config: &burn::cubecl::config::CubeClRuntimeConfig) -> String {
    format!("{config:?}")
}

/// Runs a future to completion on this thread (wgpu's enumeration is async in name only on
/// native targets: its futures are ready at once).
fn pollster_block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::yield_now();
    }
}

/// Subnormal floats flushed to zero on this thread while the guard lives, and on the worker
/// threads of rayon's global pool (burn's CPU backends run their larger kernels there) for good.
///
/// Adam keeps, for every weight, running means of the gradient and its square that decay by
/// 0.9 and 0.999 a step; for weights whose gradient falls to zero (a dead ReLU) they decay into
/// the subnormal range, where x86 arithmetic takes a microcode slow path of the order of a
/// hundred times slower. The article's run spent about a third of its time there. TensorFlow
/// flushes subnormals in its CPU threads for the same reason, and GPUs flush them in most
/// kernels; flushing values below 1.2e-38 changed no result we report (the article's run and
/// the README's three-seed sweeps came out the same). Training and evaluation run under this guard, so every CPU run computes
/// the same numbers. The previous setting comes back when the guard is dropped.
#[derive(Debug)]
pub struct FlushSubnormals {
    saved: Option<u64>,
    // The setting belongs to the thread that made the guard.
    _thread: std::marker::PhantomData<*const ()>,
}

impl FlushSubnormals {
    /// Starts flushing subnormals on the current thread (and, the first time, on rayon's
    /// workers, if the global pool has not been built yet).
    pub fn new() -> Self {
        static WORKERS: std::sync::Once = std::sync::Once::new();
        WORKERS.call_once(|| {
            let built = rayon::ThreadPoolBuilder::new()
                .start_handler(|_| {
                    if let Some(control) = fp_control::get() {
                        fp_control::set(control | fp_control::FLUSH);
                    }
                })
                .build_global();
            if let Err(e) = built {
                tracing::debug!("rayon's workers keep their float settings: {e}");
            }
        });
        let saved = fp_control::get();
        if let Some(control) = saved {
            fp_control::set(control | fp_control::FLUSH);
        }
        Self {
            saved,
            _thread: std::marker::PhantomData,
        }
    }
}

impl Default for FlushSubnormals {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for FlushSubnormals {
    fn drop(&mut self) {
        if let Some(control) = self.saved {
            fp_control::set(control);
        }
    }
}

/// The thread's floating-point control register, where the CPU has flush-to-zero bits.
mod fp_control {
    /// MXCSR's flush-to-zero (bit 15) and denormals-are-zero (bit 6).
    #[cfg(target_arch = "x86_64")]
    pub const FLUSH: u64 = 0x8040;
    /// FPCR's flush-to-zero (bit 24).
    #[cfg(target_arch = "aarch64")]
    pub const FLUSH: u64 = 1 << 24;
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    pub const FLUSH: u64 = 0;

    /// The register's value.
    pub fn get() -> Option<u64> {
        #[cfg(target_arch = "x86_64")]
        {
            let mut csr: u32 = 0;
            // SAFETY: stores the 32-bit MXCSR into a local.
            unsafe {
                std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags));
            }
            Some(u64::from(csr))
        }
        #[cfg(target_arch = "aarch64")]
        {
            let fpcr: u64;
            // SAFETY: reads FPCR, which every AArch64 thread has.
            unsafe {
                std::arch::asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack, preserves_flags));
            }
            Some(fpcr)
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        None
    }

    /// Sets the register to `value` (read with [`get`], flush bits changed only).
    pub fn set(value: u64) {
        #[cfg(target_arch = "x86_64")]
        {
            let csr = value as u32;
            // SAFETY: loads a value read from MXCSR with only the flush bits changed.
            unsafe {
                std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, preserves_flags));
            }
        }
        #[cfg(target_arch = "aarch64")]
        // SAFETY: writes back a value read from FPCR with only the flush bit changed.
        unsafe {
            std::arch::asm!("msr fpcr, {}", in(reg) value, options(nomem, nostack, preserves_flags));
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let _ = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_index_maps_to_per_type_numbering() {
        use wgpu::DeviceType::*;
        let list = [IntegratedGpu, DiscreteGpu, Cpu, DiscreteGpu];
        assert_eq!(device_kind(&list, 0), DeviceKind::IntegratedGpu(0));
        assert_eq!(device_kind(&list, 1), DeviceKind::DiscreteGpu(0));
        assert_eq!(device_kind(&list, 2), DeviceKind::Cpu);
        assert_eq!(device_kind(&list, 3), DeviceKind::DiscreteGpu(1));
    }

    #[test]
    fn device_index_needs_wgpu() {
        let err = init(DeviceRequest {
            backend: BackendKind::Flex,
            api: WgpuApi::Auto,
            index: Some(0),
            batched: false,
        })
        .unwrap_err();
        assert!(matches!(err, BackendError::DeviceWithoutWgpu));
    }

    #[test]
    fn subnormals_flush_under_the_guard_and_come_back_after() {
        // Read through black_box so the compiler cannot fold the product.
        let tiny = std::hint::black_box(1e-30_f32);
        let scale = std::hint::black_box(1e-10_f32);
        assert!((tiny * scale).is_subnormal());
        {
            let _guard = FlushSubnormals::new();
            if fp_control::get().is_some() {
                assert_eq!(std::hint::black_box(tiny * scale), 0.0);
                // A subnormal input reads as zero too.
                let sub = std::hint::black_box(f32::from_bits(1));
                assert_eq!(std::hint::black_box(sub * 2.0), 0.0);
            }
        }
        assert!(std::hint::black_box(tiny * scale).is_subnormal());
    }
}
