//! Choosing the compute backend at run time: wgpu (Vulkan / Metal / DX12) or a CPU backend.
//!
//! burn 0.22 selects the backend through the [`Device`] value, so one binary holds all of
//! them. wgpu is initialised through burn's fallible path (`Device::wgpu_options()…init()`),
//! never the lazy `Device::wgpu(..)`, which panics on first use when there is no adapter.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use burn::tensor::Device;
use burn::tensor::wgpu::{WgpuBackend, WgpuSetup, wgpu};
use tracing::{info, warn};

pub mod read;
mod subnormals;

pub use subnormals::with_subnormals_flushed;

/// The compute backends `trainer` is built with.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// burn's wgpu backend: a GPU through Vulkan, Metal or DX12.
    Wgpu,
    /// burn's ndarray backend: the CPU, the backend burn users know.
    Ndarray,
    /// burn's flex backend: the CPU, burn's newer pure-Rust CPU backend, the default (2.5×
    /// faster than ndarray on the article's model, same results; README, Performance).
    #[default]
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

/// The device the flags ask for, before a run's record is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceChoice {
    /// `--backend`, if given.
    pub backend: Option<BackendKind>,
    /// For wgpu: which graphics API.
    pub api: WgpuApi,
    /// For wgpu: which adapter (`--device`).
    pub index: Option<usize>,
    /// The adapter came from `$TRAINER_WGPU_DEVICE`, not `--device`: it applies to wgpu runs
    /// and is ignored by the CPU backends (`--device` with them is an error).
    pub index_from_env: bool,
}

impl DeviceChoice {
    /// The device to open: `--backend` if given, else `recorded` (the backend a resumed run
    /// last ran on), else the default; `batched` when the run asks for the fused step (see
    /// [`DeviceRequest::batched`]).
    pub fn request(&self, recorded: Option<BackendKind>, batched: bool) -> DeviceRequest {
        let backend = self.backend.or(recorded).unwrap_or_default();
        let ignored = self.index_from_env && backend != BackendKind::Wgpu;
        DeviceRequest {
            backend,
            api: self.api,
            index: if ignored { None } else { self.index },
            batched,
        }
    }
}

/// The device to open.
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

/// Opens the device `request` names and logs what it is.
pub fn open(request: DeviceRequest) -> Result<ReadyDevice, BackendError> {
    let device = init(request)?;
    let d = &device.info;
    info!(backend = %d.backend, adapter = %d.name, api = %d.api, kind = %d.kind, driver = %d.driver, "device");
    if d.backend == BackendKind::Wgpu && d.kind == "Cpu" {
        warn!(adapter = %d.name, "this wgpu adapter is a software renderer on the CPU: expect it to be slow");
    }
    Ok(device)
}

/// The wgpu adapters of `api`, one a line, as `--list-devices` prints them.
pub fn list_devices(api: WgpuApi) -> String {
    let (api, adapters) = adapters(api);
    if adapters.is_empty() {
        return format!("no {api:?} adapters");
    }
    adapters
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{i}: {a}"))
        .collect::<Vec<_>>()
        .join("\n")
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

/// The `index`-th adapter of `backend` (as [`adapters`] lists them) with a device opened on it
/// the way cubecl opens its own: every limit and feature the adapter has (but mappable
/// primary buffers), memory hints for low usage. burn's device kinds cannot name the second
/// of two adapters of one type (two CPU drivers, two integrated GPUs on some APIs), so an
/// adapter asked for by number is opened here and handed to burn.
fn open_adapter(backend: wgpu::Backend, index: usize) -> Result<WgpuSetup, String> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: backend.into(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapter = pollster_block_on(instance.enumerate_adapters(backend.into()))
        .into_iter()
        .nth(index)
        .ok_or_else(|| format!("adapter {index} went away"))?;
    let descriptor = wgpu::DeviceDescriptor {
        label: Some("trainer"),
        required_features: adapter
            .features()
            .difference(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS),
        required_limits: adapter.limits(),
        memory_hints: wgpu::MemoryHints::MemoryUsage,
        ..wgpu::DeviceDescriptor::default()
    };
    let (device, queue) =
        pollster_block_on(adapter.request_device(&descriptor)).map_err(|e| e.to_string())?;
    Ok(WgpuSetup {
        instance,
        adapter,
        device,
        queue,
        backend,
    })
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
    let mut options = Device::wgpu_options();
    // CUBECL_WGPU_MAX_TASKS, when set, still decides.
    if batched && std::env::var_os("CUBECL_WGPU_MAX_TASKS").is_none() {
        options = options.tasks_max(WGPU_TASKS_PER_SUBMISSION);
    }
    let (device, info) = match index {
        Some(index) => {
            let (backend, found) = adapters(api);
            if index >= found.len() {
                return Err(BackendError::NoSuchDevice {
                    index,
                    count: found.len(),
                    api: format!("{backend:?}"),
                });
            }
            let setup = open_adapter(backend, index).map_err(no_adapter)?;
            let info = setup.adapter.get_info();
            let device = options
                .setup(setup)
                .init()
                .map_err(|e| no_adapter(e.to_string()))?;
            (device, info)
        }
        None => {
            let (device, setup) = options
                .graphics_api(api.burn())
                .init_with_setup()
                .map_err(|e| no_adapter(e.to_string()))?;
            (device, setup.adapter.get_info())
        }
    };
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
