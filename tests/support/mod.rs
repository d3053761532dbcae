//! Helpers of the integration tests that drive the `trainer` binary (the crate that uses them
//! declares `mod common` too).

// Each test binary uses some of them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use trainer::data::{TRAIN_IMAGES, default_data_dir};

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

/// The `trainer` binary with `args`, run in cargo's scratch directory.
pub fn trainer(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trainer"));
    // Runs without --out go to ./runs: keep them in cargo's scratch space, not the repository.
    cmd.args(args)
        .current_dir(env!("CARGO_TARGET_TMPDIR"))
        .env_remove("RUST_LOG")
        .env("XDG_RUNTIME_DIR", "/tmp");
    cmd
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

/// The Python that has `scripts/requirements-tests.txt`, named by `$TRAINER_PYTHON`; without
/// one the calling test says it is skipped, or fails under `TRAINER_REQUIRE_PYTHON=1`.
pub fn python() -> Option<PathBuf> {
    match std::env::var_os("TRAINER_PYTHON") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            assert!(
                std::env::var("TRAINER_REQUIRE_PYTHON").as_deref() != Ok("1"),
                "TRAINER_REQUIRE_PYTHON=1 but no TRAINER_PYTHON"
            );
            crate::common::skipped_unless(
                "no TRAINER_PYTHON with scripts/requirements-tests.txt",
                "TRAINER_REQUIRE_PYTHON",
            );
            None
        }
    }
}
