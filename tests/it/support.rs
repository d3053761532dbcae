//! The helpers of every test: the integration tests' (`tests/it`, which drive the `trainer`
//! binary) and the unit tests' (`src/lib.rs` includes this file as `test_support`). Both name
//! the library `trainer`, so this file only uses its public items.

// Each test uses some of them; the unit tests cannot use those that run the binary.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use trainer::data::{Data, DataRequest, SplitSizes, TRAIN_IMAGES, default_data_dir};

/// Says, in the test run's own output, that the calling test was skipped for want of a wgpu
/// device, and why.
///
/// libtest captures `print!`/`eprint!` of a passing test and shows nothing, so a skipped test
/// would read as a plain `ok`; a write to the stderr handle itself is not captured.
pub fn skipped(why: &str) {
    skipped_unless(why, "TRAINER_REQUIRE_WGPU");
}

/// Says that the calling test was skipped and why; `require` is the variable that would make
/// it fail instead.
pub fn skipped_unless(why: &str, require: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {why} (set {require}=1 to make this fail)"
    );
}

/// Where real MNIST is: `$TRAINER_DATA_DIR` or the default data directory. Fails, never
/// skips, when it is missing.
pub fn data_dir() -> PathBuf {
    let dir = std::env::var_os("TRAINER_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(default_data_dir);
    assert!(
        dir.join(format!("{TRAIN_IMAGES}.gz")).is_file(),
        "real MNIST is not in {}: run `python3 scripts/fetch_mnist.py` first",
        dir.display()
    );
    dir
}

/// Real MNIST, its 60,000 training images whole (no validation split) and its 10,000 test
/// images; the tests that need it fail, never skip, without it.
pub fn mnist() -> Data {
    mnist_with_valid(0)
}

/// Real MNIST with its last `valid` training images for validation, as a run splits it.
pub fn mnist_with_valid(valid: usize) -> Data {
    let sizes = SplitSizes {
        valid: Some(valid),
        test: None,
    };
    trainer::data::load(&DataRequest::idx(&data_dir()), sizes).unwrap_or_else(|e| {
        panic!("real MNIST is needed: run `python3 scripts/fetch_mnist.py` first ({e})")
    })
}

/// The wgpu device on Vulkan (lavapipe in CI), or `None` where there is none and CI does not
/// require one (`TRAINER_REQUIRE_WGPU`): the test then passes as skipped, saying so in the
/// test output.
pub fn wgpu() -> Option<burn::tensor::Device> {
    use trainer::backend::{BackendKind, DeviceRequest};
    let request = DeviceRequest {
        backend: BackendKind::Wgpu,
        api: wgpu_api(),
        index: wgpu_device(),
        batched: true,
    };
    match trainer::backend::init(request) {
        Ok(ready) => Some(ready.device),
        Err(e) if std::env::var_os("TRAINER_REQUIRE_WGPU").is_none() => {
            skipped(&format!("no wgpu device ({e})"));
            None
        }
        Err(e) => panic!("TRAINER_REQUIRE_WGPU is set and there is no wgpu device: {e}"),
    }
}

/// The graphics API the wgpu tests run on: `$TRAINER_WGPU_API` (`vulkan`, `metal`, `dx12`,
/// `auto`; what `--wgpu-api` takes, and the binary reads the same variable), Vulkan by default.
pub fn wgpu_api() -> trainer::backend::WgpuApi {
    use clap::ValueEnum;
    match std::env::var("TRAINER_WGPU_API") {
        Ok(name) => trainer::backend::WgpuApi::from_str(&name, true)
            .unwrap_or_else(|e| panic!("TRAINER_WGPU_API={name}: {e}")),
        Err(_) => trainer::backend::WgpuApi::Vulkan,
    }
}

/// The adapter the wgpu tests run on: `$TRAINER_WGPU_DEVICE`, its number in `trainer
/// --list-devices` for the tests' API (what `--device` takes, and the binary reads the same
/// variable); wgpu's pick by default.
pub fn wgpu_device() -> Option<usize> {
    let value = std::env::var("TRAINER_WGPU_DEVICE").ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|e| panic!("TRAINER_WGPU_DEVICE={value}: {e}")),
    )
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

/// The `trainer` binary with `args`, run in cargo's scratch directory (integration tests
/// only: cargo names the binary for them).
pub fn trainer(args: &[&str]) -> Command {
    let binary = option_env!("CARGO_BIN_EXE_trainer")
        .unwrap_or_else(|| panic!("only the integration tests run the trainer binary"));
    let scratch = option_env!("CARGO_TARGET_TMPDIR").unwrap_or(".");
    let mut cmd = Command::new(binary);
    // Runs without --out go to ./runs: keep them in cargo's scratch space, not the repository.
    cmd.args(args)
        .current_dir(scratch)
        .env_remove("RUST_LOG")
        .env("XDG_RUNTIME_DIR", "/tmp");
    cmd
}

/// The `trainer` binary's path (integration tests only).
pub fn trainer_binary() -> PathBuf {
    PathBuf::from(
        option_env!("CARGO_BIN_EXE_trainer")
            .unwrap_or_else(|| panic!("only the integration tests run the trainer binary")),
    )
}

/// Runs `cmd` to its end.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("the trainer binary runs")
}

/// Bytes as text, for messages.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The value of `key=` in the stdout result line.
pub fn result(out: &Output, key: &str) -> f64 {
    let stdout = text(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no {key}= in stdout {stdout:?}; stderr: {}",
                text(&out.stderr)
            )
        })
}

/// The scalars of the run's TensorBoard event file, which must be the only one.
pub fn events(dir: &Path) -> Vec<trainer::interop::tensorboard::Scalars> {
    use trainer::interop::tensorboard::{event_files, read_scalars};
    let files = event_files(dir).unwrap();
    assert_eq!(
        files.len(),
        1,
        "event files in {}: {files:?}",
        dir.display()
    );
    read_scalars(&std::fs::read(&files[0]).unwrap())
}

/// Whether `require` (a `TRAINER_REQUIRE_…` variable) is `1`: CI's demand that a test whose
/// tool is missing fail rather than skip.
pub fn required(require: &str) -> bool {
    std::env::var(require).as_deref() == Ok("1")
}

/// Says that the calling test is skipped for want of something (`why`: what is missing and
/// how to get it), or fails it when `require` demands the test.
pub fn missing(why: &str, require: &str) {
    assert!(!required(require), "{require}=1 but {why}");
    skipped_unless(why, require);
}

/// Whether `program ARG` runs and succeeds: the tool is installed.
pub fn runs(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The Python that has `scripts/requirements-tests.txt`, named by `$TRAINER_PYTHON`; without
/// one the calling test says it is skipped, or fails under `TRAINER_REQUIRE_PYTHON=1`.
pub fn python() -> Option<PathBuf> {
    match std::env::var_os("TRAINER_PYTHON") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            missing(
                "no TRAINER_PYTHON with scripts/requirements-tests.txt",
                "TRAINER_REQUIRE_PYTHON",
            );
            None
        }
    }
}
