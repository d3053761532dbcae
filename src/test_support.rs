//! What the unit tests that need real MNIST or a wgpu device share.

use std::io::Write;
use std::path::PathBuf;

use burn::tensor::Device;

use crate::backend::{BackendKind, DeviceRequest, WgpuApi};
use crate::data::{Mnist, default_data_dir};

/// Where the real MNIST files are (`$TRAINER_DATA_DIR`, else the default).
pub fn data_dir() -> PathBuf {
    std::env::var_os("TRAINER_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(default_data_dir)
}

/// Real MNIST; the tests that need it fail, never skip, without it.
pub fn mnist() -> Mnist {
    Mnist::load(&data_dir()).unwrap_or_else(|e| {
        panic!("real MNIST is needed: run `python3 scripts/fetch_mnist.py` first ({e})")
    })
}

/// The wgpu device on Vulkan (lavapipe in CI), or `None` where there is none and CI does not
/// require one (`TRAINER_REQUIRE_WGPU`): the test then passes as skipped, saying so in the
/// test output.
pub fn wgpu() -> Option<Device> {
    let request = DeviceRequest {
        backend: BackendKind::Wgpu,
        api: WgpuApi::Vulkan,
        index: None,
        batched: true,
    };
    match crate::backend::init(request) {
        Ok(ready) => Some(ready.device),
        Err(e) if std::env::var_os("TRAINER_REQUIRE_WGPU").is_none() => {
            skipped(&format!("no wgpu device ({e})"));
            None
        }
        Err(e) => panic!("TRAINER_REQUIRE_WGPU is set and there is no wgpu device: {e}"),
    }
}

/// Says, in the test run's own output, that the calling test was skipped and why. libtest
/// captures `print!`/`eprint!` of a passing test and shows nothing, so a skipped test would
/// read as a plain `ok`; a write to the stderr handle itself is not captured.
pub fn skipped(why: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {why} (set TRAINER_REQUIRE_WGPU=1 to make this fail)"
    );
}
