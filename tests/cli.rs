//! `trainer` seen from outside: run the binary on real MNIST subsets and on bad input.
//!
//! The training tests need real MNIST in `$TRAINER_DATA_DIR` or the default data directory:
//! `python3 scripts/fetch_mnist.py` provisions it. They fail, never skip, when it is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use trainer::data::{
    Mnist, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, default_data_dir, write_split,
};

fn data_dir() -> PathBuf {
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

fn trainer(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trainer"));
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env("XDG_RUNTIME_DIR", "/tmp");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("the trainer binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The value of `key=` in the stdout result line.
fn result(out: &Output, key: &str) -> f64 {
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

#[rustfmt::skip]
/// A small real subset: 10,000 training, 1,000 validation and 2,000 test images.
const SUBSET: [&str; 8] = [
    "--train-limit", "10000", "--valid-size", "1000", "--test-limit", "2000", "--seed", "7",
];

fn train_subset(backend: &str, epochs: &str, extra: &[&str]) -> Output {
    let dir = data_dir();
    let mut args = vec!["--backend", backend, "--epochs", epochs];
    args.extend(SUBSET);
    args.extend(extra);
    let out = run(trainer(&args).arg("--data-dir").arg(&dir));
    assert!(
        out.status.success(),
        "trainer failed: {}",
        text(&out.stderr)
    );
    out
}

#[test]
fn learns_on_ndarray() {
    let out = train_subset("ndarray", "3", &[]);
    let acc = result(&out, "test_acc");
    assert!(
        acc > 0.8,
        "test accuracy {acc} after 3 epochs on 10,000 images"
    );
    assert_eq!(result(&out, "test_images"), 2000.0);
    let stderr = text(&out.stderr);
    assert_eq!(stderr.matches("epoch=").count(), 3, "{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "no colour codes when piped: {stderr:?}"
    );
}

#[test]
fn flex_and_ndarray_agree() {
    let a = train_subset("ndarray", "1", &[]);
    let b = train_subset("flex", "1", &[]);
    let (la, lb) = (result(&a, "test_loss"), result(&b, "test_loss"));
    assert!(
        (la - lb).abs() < 0.01,
        "test loss ndarray {la} vs flex {lb}"
    );
}

/// Whether a Vulkan driver is installed (Mesa's lavapipe in CI).
fn vulkan_present() -> bool {
    ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d"]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .any(|e| e.is_ok())
}

#[test]
fn learns_on_wgpu_and_agrees_with_the_cpu() {
    let required = std::env::var_os("TRAINER_REQUIRE_WGPU").is_some();
    if !vulkan_present() && !required {
        eprintln!("SKIPPED: no Vulkan driver here (set TRAINER_REQUIRE_WGPU=1 to make this fail)");
        return;
    }
    let gpu = train_subset("wgpu", "2", &[]);
    let stderr = text(&gpu.stderr);
    assert!(stderr.contains("backend=wgpu"), "{stderr}");
    let acc = result(&gpu, "test_acc");
    assert!(
        acc > 0.75,
        "wgpu test accuracy {acc} after 2 epochs on 10,000 images"
    );
    // Same seed, data and recipe on the CPU: the two runs differ only by float rounding.
    let cpu = train_subset("ndarray", "2", &[]);
    let (lg, lc) = (result(&gpu, "test_loss"), result(&cpu, "test_loss"));
    assert!(
        (lg - lc).abs() < 0.01,
        "test loss wgpu {lg} vs ndarray {lc}"
    );
}

#[test]
fn json_log_file_has_one_object_per_line() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("run.jsonl");
    let log_arg = log.to_str().unwrap();
    let out = train_subset(
        "ndarray",
        "2",
        &["--log-format", "json", "--log-file", log_arg],
    );
    let content = std::fs::read_to_string(&log).unwrap();
    assert!(!content.contains('\x1b'));
    let events: Vec<serde_json::Value> = content
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let epochs: Vec<_> = events.iter().filter(|e| e["message"] == "epoch").collect();
    assert_eq!(epochs.len(), 2);
    for key in [
        "epoch",
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "seconds",
        "images_per_s",
    ] {
        assert!(epochs[1][key].is_number(), "{key} missing in {}", epochs[1]);
    }
    let test = events
        .iter()
        .find(|e| e["message"] == "test")
        .expect("a test event");
    assert_eq!(
        test["test_acc"].as_f64().unwrap(),
        (result(&out, "test_acc") * 1e4).round() / 1e4
    );
    // Appending: a second run keeps the first run's lines.
    train_subset(
        "ndarray",
        "1",
        &["--log-format", "json", "--log-file", log_arg],
    );
    let again = std::fs::read_to_string(&log).unwrap();
    assert!(again.starts_with(&content) && again.len() > content.len());
}

/// A data directory holding a copy of a few real images, for corrupting.
fn small_data_dir() -> tempfile::TempDir {
    let mnist = Mnist::load(&data_dir()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n);
    write_split(
        &mnist.train.slice(0..60),
        &p(TRAIN_IMAGES),
        &p(TRAIN_LABELS),
    )
    .unwrap();
    write_split(&mnist.test.slice(0..20), &p(TEST_IMAGES), &p(TEST_LABELS)).unwrap();
    tmp
}

/// Runs on `dir` and checks for one clear error line naming `name`.
fn assert_clean_failure(dir: &Path, name: &str, what: &str) {
    let out = run(trainer(&["--epochs", "1", "--valid-size", "10"])
        .arg("--data-dir")
        .arg(dir));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains(name) && errors[0].contains(what),
        "{stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("internal error"),
        "{stderr}"
    );
}

#[test]
fn the_small_copy_trains() {
    let dir = small_data_dir();
    let out = run(trainer(&["--epochs", "1", "--valid-size", "10"])
        .arg("--data-dir")
        .arg(dir.path()));
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn bad_files_give_one_clear_line() {
    let dir = small_data_dir();
    let file = dir.path().join(TRAIN_IMAGES);
    let good = std::fs::read(&file).unwrap();

    std::fs::write(&file, &good[..good.len() - 100]).unwrap();
    assert_clean_failure(dir.path(), TRAIN_IMAGES, "header promises");

    std::fs::write(&file, [0x1f, 0x8b, 8, 0, 1, 2, 3]).unwrap();
    assert_clean_failure(dir.path(), TRAIN_IMAGES, "gzip");

    std::fs::write(&file, b"PK\x03\x04 a zip file").unwrap();
    assert_clean_failure(dir.path(), TRAIN_IMAGES, "magic");

    std::fs::remove_file(&file).unwrap();
    assert_clean_failure(dir.path(), TRAIN_IMAGES, "fetch_mnist");

    std::fs::write(&file, &good).unwrap();
    let labels = dir.path().join(TEST_LABELS);
    let mut bad = std::fs::read(&labels).unwrap();
    *bad.last_mut().unwrap() = 11;
    std::fs::write(&labels, bad).unwrap();
    assert_clean_failure(dir.path(), TEST_LABELS, "label 11");
}

#[test]
fn no_gpu_is_a_clear_error() {
    let dir = small_data_dir();
    // A Vulkan loader pointed at no driver sees no adapter, as on a machine without a GPU.
    let out = run(trainer(&[
        "--backend",
        "wgpu",
        "--wgpu-api",
        "vulkan",
        "--epochs",
        "1",
        "--valid-size",
        "10",
    ])
    .arg("--data-dir")
    .arg(dir.path())
    .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
    .env("VK_DRIVER_FILES", "/nonexistent/icd.json"));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no usable GPU adapter") && stderr.contains("--backend ndarray"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("internal error"),
        "{stderr}"
    );
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{stderr}"
    );
}

#[test]
fn bad_flags_are_refused_by_name() {
    for (args, flag) in [
        (&["--batch-size", "0"][..], "--batch-size"),
        (&["--lr=-1"][..], "--lr"),
        (&["--backend", "cuda"][..], "--backend"),
        (&["--hidden", "30,x"][..], "--hidden"),
    ] {
        let out = run(&mut trainer(args));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains(flag),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = run(&mut trainer(&["--hidden", "30,0"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--hidden"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn help_documents_every_flag() {
    let out = run(&mut trainer(&["--help"]));
    let help = text(&out.stdout);
    for flag in [
        "--backend",
        "--wgpu-api",
        "--device",
        "--list-devices",
        "--data-dir",
        "--epochs",
        "--batch-size",
        "--lr",
        "--seed",
        "--hidden",
        "--valid-size",
        "--log-format",
        "--log-file",
        "--verbose",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}
