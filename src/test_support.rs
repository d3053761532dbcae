//! What the unit tests that need real MNIST or a wgpu device share.

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

/// A reader that never ends (zeros), counting the bytes read from it: for checking that a
/// reader stops where a file's header says it should.
pub struct Endless(pub u64);

impl std::io::Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        buf.fill(0);
        Ok(buf.len())
    }
}

/// Says in the test output that a test was skipped (shared with the integration tests).
pub use crate::common::skipped;
