//! `trainer` seen from outside: run the binary on real MNIST subsets and on bad input.
//!
//! The training tests need real MNIST in `$TRAINER_DATA_DIR` or the default data directory:
//! `python3 scripts/fetch_mnist.py` provisions it. They fail, never skip, when it is missing.

use crate::support::{data_dir, result, run, text, trainer};

use std::path::Path;
use std::process::{Command, Output};

use trainer::data::{TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, write_split};

#[rustfmt::skip]
/// A small real subset: 10,000 training, 1,000 validation and 2,000 test images.
const SUBSET: [&str; 8] = [
    "--train-limit", "10000", "--valid-size", "1000", "--test-limit", "2000", "--seed", "7",
];

/// A tiny real subset for a run that only has to get through: 64 training and 64 test images.
const TINY: [&str; 6] = [
    "--train-limit",
    "64",
    "--valid-size",
    "0",
    "--test-limit",
    "64",
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

/// Whether to run the wgpu tests: a Vulkan driver is there, or CI requires them (and they
/// then fail without one rather than skip).
pub(crate) fn wgpu_tests_run() -> bool {
    let required = std::env::var_os("TRAINER_REQUIRE_WGPU").is_some();
    if !vulkan_present() && !required {
        crate::support::skipped("no Vulkan driver here");
        return false;
    }
    true
}

/// The measure of "the same numbers": 3 epochs on 10,000 images, wgpu (the fused step)
/// and flex with the same seed: every epoch's validation loss within 0.2 % of each other, and
/// the test accuracy within 0.3 points.
#[test]
fn learns_on_wgpu_and_agrees_with_the_cpu() {
    if !wgpu_tests_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let runs: Vec<(Output, Vec<f64>)> = ["wgpu", "flex"]
        .iter()
        .map(|backend| {
            let out_dir = dir.path().join(backend);
            let out = train_subset(backend, "3", &["--out", out_dir.to_str().unwrap()]);
            let losses = std::fs::read_to_string(out_dir.join("history.jsonl"))
                .unwrap()
                .lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    v["valid"]["loss"].as_f64().unwrap()
                })
                .collect();
            (out, losses)
        })
        .collect();
    let [(gpu, gpu_losses), (cpu, cpu_losses)] = &runs[..] else {
        unreachable!()
    };
    let stderr = text(&gpu.stderr);
    assert!(stderr.contains("backend=wgpu"), "{stderr}");
    assert!(
        !stderr.contains("generic training step"),
        "the article's recipe takes the fused step: {stderr}"
    );
    assert_eq!(gpu_losses.len(), 3);
    for (epoch, (g, c)) in gpu_losses.iter().zip(cpu_losses).enumerate() {
        assert!(
            (g - c).abs() <= 0.002 * c,
            "epoch {}: validation loss wgpu {g} vs flex {c}",
            epoch + 1
        );
    }
    let (ag, ac) = (result(gpu, "test_acc"), result(cpu, "test_acc"));
    assert!(
        ag > 0.85,
        "wgpu test accuracy {ag} after 3 epochs on 10,000 images"
    );
    assert!(
        (ag - ac).abs() <= 0.003,
        "test accuracy wgpu {ag} vs flex {ac}"
    );
}

/// Where the fused step does not apply, one log line says why and burn's generic step trains.
#[test]
fn the_generic_step_takes_over_with_a_reason() {
    if !wgpu_tests_run() {
        return;
    }
    let mut args = vec!["--backend", "wgpu", "--epochs", "1", "--gather", "host"];
    args.extend(TINY);
    let out = run(trainer(&args).arg("--data-dir").arg(data_dir()));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let said: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("burn's generic training step"))
        .collect();
    assert_eq!(said.len(), 1, "{stderr}");
    assert!(said[0].contains("--gather ops|host"), "{}", said[0]);
}

/// The CNN learns on flex, and a second identical run gives the same history to the last
/// bit (the fused conv block sums in a fixed order, whatever the threads do).
#[test]
fn cnn_learns_on_the_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let mut args = vec!["--model", "cnn", "--epochs", "1", "--train-limit", "3000"];
    args.extend([
        "--valid-size",
        "1000",
        "--test-limit",
        "1000",
        "--seed",
        "7",
        "--out",
    ]);
    let runs = ["a", "b"].map(|name| {
        let dir = tmp.path().join(name);
        let out = run(trainer(&args).arg(&dir).arg("--data-dir").arg(data_dir()));
        assert!(out.status.success(), "{}", text(&out.stderr));
        (out, dir)
    });
    let (out, dir) = &runs[0];
    assert!(text(&out.stderr).contains("model=cnn"));
    let acc = result(out, "test_acc");
    // One epoch is the whole cosine schedule here; chance is 0.1.
    assert!(
        acc > 0.7,
        "CNN test accuracy {acc} after one epoch on 3,000 images"
    );
    assert_eq!(
        history_without_times(dir),
        history_without_times(&runs[1].1)
    );
    assert_eq!(result(out, "test_loss"), result(&runs[1].0, "test_loss"));
}

/// Two CNN steps on wgpu compute what they compute on the CPU (the conv kernels really run).
#[test]
fn cnn_runs_on_wgpu_as_on_the_cpu() {
    if !wgpu_tests_run() {
        return;
    }
    let tiny = |backend: &str| {
        let mut args = vec!["--model", "cnn", "--backend", backend, "--epochs", "1"];
        args.extend(TINY);
        let out = run(trainer(&args).arg("--data-dir").arg(data_dir()));
        assert!(out.status.success(), "{backend}: {}", text(&out.stderr));
        result(&out, "test_loss")
    };
    let (gpu, cpu) = (tiny("wgpu"), tiny("flex"));
    assert!(
        (gpu - cpu).abs() < 1e-3,
        "test loss wgpu {gpu} vs flex {cpu}"
    );
}

#[test]
fn a_sweep_trains_every_point_compares_them_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    let sweep = || {
        let mut cmd = trainer(&["-q", "sweep", "--out"]);
        cmd.arg(&out)
            .args([
                "--lr",
                "1e-3,3e-3",
                "--hidden",
                "30,10:64",
                "--epochs",
                "2",
                "--",
            ])
            .args([
                "--train-limit",
                "2000",
                "--valid-size",
                "500",
                "--test-limit",
                "500",
            ])
            .arg("--data-dir")
            .arg(data_dir());
        run(&mut cmd)
    };
    let first = sweep();
    assert!(first.status.success(), "{}", text(&first.stderr));
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert_eq!(
        csv.lines().count(),
        1 + 4,
        "a header and one row per point: {csv}"
    );
    for line in csv.lines().skip(1) {
        let test_acc: f64 = line.split(',').nth(4).unwrap().parse().unwrap();
        assert!(test_acc > 0.5, "{line}");
    }
    assert!(text(&first.stdout).contains("| mlp-h64-lr0.003-b32-e2-s42 |"));
    assert_png(&out.join("validation_curves.png"));
    // Again: every run is finished, so nothing is trained and the table is the same.
    let again = sweep();
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(text(&again.stdout), text(&first.stdout));
    // A flag the sweep sets per run is refused after `--`.
    let mut cmd = trainer(&["sweep", "--out"]);
    let bad = run(cmd.arg(&out).args(["--", "--lr", "0.1"]));
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("--lr is set by the sweep"));
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
    let mnist = crate::support::mnist();
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
    assert_clean_failure(dir.path(), TEST_LABELS, "label 11 at index 19 is outside");
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
        stderr.contains("no usable GPU adapter") && stderr.contains("--backend flex"),
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

/// An error's cause is printed once, not once by the error and again as its source.
#[test]
fn an_error_names_its_cause_once() {
    let out = run(&mut trainer(&[
        "evaluate",
        "--model",
        "/nonexistent/x.model",
    ]));
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let line = stderr.lines().last().unwrap_or_default();
    assert!(line.starts_with("error: /nonexistent/x.model"), "{stderr}");
    assert_eq!(
        line.matches("No such file or directory").count(),
        1,
        "{line}"
    );
}

/// Nothing to evaluate is refused up front, never reported as a NaN result.
#[test]
fn an_empty_evaluation_is_refused() {
    for args in [
        &["evaluate", "--model", "x.model", "--test-limit", "0"][..],
        &["train", "--test-limit", "0"][..],
        &["train", "--train-limit", "0"][..],
    ] {
        let out = run(&mut trainer(args));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains("must be at least 1"), "{stderr}");
        assert!(!text(&out.stdout).contains("NaN"));
    }
}

#[test]
fn bad_flags_are_refused_by_name() {
    for (args, flag) in [
        (&["--batch-size", "0"][..], "--batch-size"),
        (&["--lr=-1"][..], "--lr"),
        (&["--backend", "cuda"][..], "--backend"),
        (&["--hidden", "30,x"][..], "--hidden"),
        (&["--weight-decay=-0.1"][..], "--weight-decay"),
        (&["--label-smoothing", "1"][..], "--label-smoothing"),
        (&["--dropout", "1.5"][..], "--dropout"),
        // A training flag before a subcommand would be ignored: refused instead.
        (&["--epochs", "3", "plot", "runs/x"][..], "--epochs"),
    ] {
        let out = run(&mut trainer(args));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains(flag),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    // Logging flags go anywhere: before the subcommand they reach it.
    let out = run(&mut trainer(&["-q", "plot", "no-such-run"]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no-such-run"));
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
        "--weight-decay",
        "--label-smoothing",
        "--dropout",
        "--valid-size",
        "--gather",
        "--step",
        "--log-format",
        "--log-file",
        "--verbose",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

// ---------------------------------------------------------------- run directories (issue 3)

/// Trains on a subset into `out`, returning the result line's output.
fn train_into(out: &Path, extra: &[&str]) -> Output {
    let dir = data_dir();
    let mut args = vec!["train", "--backend", "ndarray", "--epochs", "3"];
    args.extend(SUBSET);
    args.extend(extra);
    let out = run(trainer(&args)
        .arg("--data-dir")
        .arg(&dir)
        .arg("--out")
        .arg(out));
    assert!(
        out.status.success(),
        "trainer failed: {}",
        text(&out.stderr)
    );
    out
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        path.display()
    );
    assert!(
        bytes.len() > 10_000,
        "{} is only {} bytes",
        path.display(),
        bytes.len()
    );
}

/// `trainer evaluate --json` of `model` on 2,000 test images, with `extra` flags.
fn evaluate_json(model: &Path, extra: &[&str]) -> serde_json::Value {
    let mut cmd = trainer(&["evaluate", "--test-limit", "2000", "--json", "--model"]);
    cmd.arg(model).args(extra).arg("--data-dir").arg(data_dir());
    let out = run(&mut cmd);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_run_directory_keeps_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("run");
    let out = train_into(&out_dir, &[]);
    for f in [
        "config.json",
        "history.csv",
        "history.jsonl",
        "checkpoint.ckpt",
        "best.model",
        "model.model",
        "test.json",
        "learning_curves.svg",
        "confusion.svg",
    ] {
        assert!(out_dir.join(f).is_file(), "{f} missing");
    }
    assert_png(&out_dir.join("learning_curves.png"));
    assert_png(&out_dir.join("confusion.png"));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["recipe"]["epochs"], 3);
    assert_eq!(config["recipe"]["seed"], 7);
    assert_eq!(config["starts"][0]["device"]["backend"], "ndarray");
    assert!(config["trainer_version"].is_string());
    let csv = std::fs::read_to_string(out_dir.join("history.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");

    // The same --out again is refused: an earlier run is never overwritten.
    let again = run(trainer(&["--epochs", "1", "--data-dir"])
        .arg(data_dir())
        .arg("--out")
        .arg(&out_dir));
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("already holds a run"),
        "{}",
        text(&again.stderr)
    );

    // evaluate gives the run's own test result, per class, as JSON.
    let report = evaluate_json(&out_dir.join("model.model"), &[]);
    let acc = report["metrics"]["accuracy"].as_f64().unwrap();
    assert!((acc - result(&out, "test_acc")).abs() < 1e-4);
    assert_eq!(report["per_class"].as_array().unwrap().len(), 10);
    let total: u64 = report["confusion"]["counts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|c| c.as_u64().unwrap()))
        .sum();
    assert_eq!(total, 2000);
    // ... and on the other backend the model file loads and agrees.
    let flex = evaluate_json(&out_dir.join("model.model"), &["--backend", "flex"]);
    assert_eq!(flex["metrics"]["accuracy"], report["metrics"]["accuracy"]);

    // The run directory itself names its final model (and with --best its best one).
    for (extra, file) in [(&[][..], "model.model"), (&["--best"][..], "best.model")] {
        let by_dir = evaluate_json(&out_dir, extra);
        assert_eq!(
            by_dir["model"],
            out_dir.join(file).to_str().unwrap(),
            "{extra:?}"
        );
        if extra.is_empty() {
            assert_eq!(by_dir["metrics"], report["metrics"]);
        }
    }

    // The table form names precision, recall and the confusion matrix.
    let table = run(trainer(&["evaluate", "--test-limit", "500", "--model"])
        .arg(out_dir.join("model.model"))
        .arg("--data-dir")
        .arg(data_dir()));
    let table = text(&table.stdout);
    assert!(
        table.contains("precision") && table.contains("true\\pred"),
        "{table}"
    );

    // plot redraws from the directory alone.
    std::fs::remove_file(out_dir.join("learning_curves.png")).unwrap();
    let plot = run(trainer(&["plot"]).arg(&out_dir));
    assert!(plot.status.success(), "{}", text(&plot.stderr));
    assert_png(&out_dir.join("learning_curves.png"));
}

/// Writes test image `i` as an 8-bit grayscale PNG, scaled ×3, optionally black on white.
fn write_digit_png(pixels: &[u8], path: &Path, inverted: bool) {
    let img = image::GrayImage::from_fn(84, 84, |x, y| {
        let v = pixels[(y / 3 * 28 + x / 3) as usize];
        image::Luma([if inverted { 255 - v } else { v }])
    });
    img.save(path).unwrap();
}

#[test]
fn predict_reads_digit_pictures() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("run");
    train_into(&out_dir, &[]);
    let mnist = crate::support::mnist();
    let n = 30;
    let mut files = Vec::new();
    for i in 0..n {
        let path = tmp.path().join(format!("digit-{i}.png"));
        write_digit_png(mnist.test.image(i), &path, false);
        files.push(path);
    }
    let inverted = tmp.path().join("inverted.png");
    write_digit_png(mnist.test.image(0), &inverted, true);
    let empty = tmp.path().join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    let bogus = tmp.path().join("bogus.jpg");
    std::fs::write(&bogus, b"this is not a JPEG").unwrap();

    let mut cmd = trainer(&["predict", "--json", "--model"]);
    cmd.arg(out_dir.join("model.model"))
        .args(&files)
        .arg(&inverted)
        .arg(&empty)
        .arg(&bogus);
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(1), "two files are bad");
    let answers: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), n + 3, "one answer per file");
    let digit = |v: &serde_json::Value| v["digit"].as_u64();
    let right = (0..n)
        .filter(|&i| digit(&answers[i]) == Some(u64::from(mnist.test.labels()[i])))
        .count();
    assert!(right >= 27, "{right} of {n} test digits right");
    assert_eq!(
        digit(&answers[n]),
        digit(&answers[0]),
        "black on white reads the same"
    );
    for bad in [&answers[n + 1], &answers[n + 2]] {
        assert!(bad["error"].is_string(), "{bad}");
    }
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("empty.png: empty file") && stderr.contains("bogus.jpg"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
}

#[test]
fn interrupted_then_resumed_equals_straight_through() {
    // On flex with AdamW, dropout and label smoothing: the resumed run rebuilds the same
    // optimizer and draws the same dropout masks.
    let regularised = [
        "--weight-decay",
        "0.01",
        "--dropout",
        "0.2",
        "--label-smoothing",
        "0.1",
    ];
    // flex takes the fused CPU step unless told otherwise; burn's generic step too.
    let generic = [&regularised[..], &["--step", "generic"]].concat();
    for (backend, extra) in [
        ("flex", &regularised[..]),
        ("flex", &generic[..]),
        ("ndarray", &[][..]),
    ] {
        interrupted_then_resumed_equals_straight_through_on(backend, extra);
    }
}

/// The fused step on wgpu resumes exactly too: its weights, Adam's moments and step count and
/// the epoch's running sums go through the checkpoint, and its kernels sum in a fixed order.
#[test]
fn interrupted_then_resumed_equals_straight_through_on_wgpu() {
    if !wgpu_tests_run() {
        return;
    }
    let flags = [
        "--train-limit",
        "20000",
        "--dropout",
        "0.2",
        "--augment",
        "1",
        "--label-smoothing",
        "0.1",
        "--weight-decay",
        "0.01",
    ];
    interrupted_then_resumed_equals_straight_through_on("wgpu", &flags);
}

fn interrupted_then_resumed_equals_straight_through_on(backend: &str, extra: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let straight_dir = tmp.path().join("straight");
    let straight = run(interruptible(backend, extra)
        .arg("--data-dir")
        .arg(data_dir())
        .arg("--out")
        .arg(&straight_dir));
    assert!(straight.status.success(), "{}", text(&straight.stderr));

    let dir = tmp.path().join("interrupted");
    let stopped = interrupt_run(backend, extra, &dir, 1);
    let stderr = text(&stopped.stderr);
    assert_eq!(stopped.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("--resume"), "says how to resume: {stderr}");
    assert!(!dir.join("model.model").exists(), "stopped before the end");

    // The step is not the run's to remember (a run moves between steps): given again.
    let step: Vec<&str> = extra
        .windows(2)
        .find(|w| w[0] == "--step")
        .map_or(vec![], <[&str]>::to_vec);
    let resumed = run(trainer(&["train", "--resume"])
        .arg(&dir)
        .args(&step)
        .arg("--data-dir")
        .arg(data_dir()));
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    assert_eq!(
        text(&resumed.stdout),
        text(&straight.stdout),
        "same test result"
    );
    assert_eq!(
        history_without_times(&dir),
        history_without_times(&straight_dir)
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let starts = config["starts"].as_array().unwrap();
    assert_eq!(starts.len(), 2);
    assert_eq!(
        starts[1]["device"]["backend"], backend,
        "resumed on the run's own backend"
    );
    let how = |i: usize| starts[i]["ended"]["how"].as_str().unwrap_or_default();
    assert_eq!((how(0), how(1)), ("stopped", "finished"), "{starts:?}");
    if !extra.is_empty() {
        assert_eq!(config["recipe"]["weight_decay"], 0.01);
        assert_eq!(config["recipe"]["label_smoothing"], 0.1);
        assert_eq!(config["recipe"]["dropout"], 0.2);
    }
}

/// A run that fails after it started says so in `config.json`, with the error: here its
/// `test.json` cannot be written (a directory stands in its place).
#[test]
fn a_failed_run_records_how_it_ended() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    std::fs::create_dir_all(dir.join("test.json")).unwrap();
    let out = run(trainer(&["--epochs", "1"])
        .args(TINY)
        .arg("--data-dir")
        .arg(data_dir())
        .arg("--out")
        .arg(&dir));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let ended = &config["starts"][0]["ended"];
    assert_eq!(ended["how"], "failed", "{config}");
    assert!(
        ended["error"].as_str().unwrap().contains("test.json"),
        "{ended}"
    );
}

/// A run killed after its last files were written, before it could record that it finished,
/// is finished by the same command again (the same result line, the start recorded as
/// finished); once finished, the same command is refused with one line.
#[test]
fn a_run_killed_after_its_last_files_finishes_when_started_again() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let first = run(trainer(&["--epochs", "1"])
        .args(TINY)
        .arg("--data-dir")
        .arg(data_dir())
        .arg("--out")
        .arg(&dir));
    assert!(first.status.success(), "{}", text(&first.stderr));
    // What a kill between the last file and the record of the ending leaves.
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["starts"][0].as_object_mut().unwrap().remove("ended");
    std::fs::write(&path, config.to_string()).unwrap();
    let again = || {
        run(trainer(&["--epochs", "1"])
            .args(TINY)
            .arg("--data-dir")
            .arg(data_dir())
            .arg("--resume")
            .arg(&dir))
    };
    let second = again();
    assert!(second.status.success(), "{}", text(&second.stderr));
    assert_eq!(text(&second.stdout), text(&first.stdout));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(config["starts"][1]["ended"]["how"], "finished", "{config}");
    let third = again();
    assert_eq!(third.status.code(), Some(1));
    assert!(
        text(&third.stderr).contains("already done 1 epochs"),
        "{}",
        text(&third.stderr)
    );
}

/// The run the interrupt tests stop and resume: three epochs on a CPU backend, with `extra`
/// training flags.
fn interruptible(backend: &str, extra: &[&str]) -> Command {
    let mut cmd = trainer(&[
        "train",
        "--backend",
        backend,
        "--epochs",
        "3",
        "--seed",
        "3",
    ]);
    cmd.args(["--valid-size", "1000", "--test-limit", "1000"]);
    cmd.args(extra);
    cmd
}

/// Starts a training run and sends it SIGINT `signals` times once its first epoch is done.
fn interrupt_run(backend: &str, extra: &[&str], out_dir: &Path, signals: usize) -> Output {
    let child = interruptible(backend, extra)
        .arg("--data-dir")
        .arg(data_dir())
        .arg("--out")
        .arg(out_dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let history = out_dir.join("history.jsonl");
    let start = std::time::Instant::now();
    while !history.is_file() {
        assert!(start.elapsed().as_secs() < 120, "no epoch finished");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    for _ in 0..signals {
        let kill = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
    }
    child.wait_with_output().unwrap()
}

fn history_without_times(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("history.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut()
                .unwrap()
                .retain(|k, _| k == "epoch" || k == "train" || k == "valid");
            v
        })
        .collect()
}

/// What a run leaves that must come out the same however it got there: the history without
/// timings, the test metrics, and the final weights (the model file's parameters; the file's
/// bytes also hold parameter ids, which are drawn anew in every process).
fn run_result(dir: &Path) -> (Vec<serde_json::Value>, serde_json::Value, Vec<Vec<f32>>) {
    let test: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("test.json")).unwrap()).unwrap();
    let (model, _) =
        trainer::checkpoint::load_model(&dir.join("model.model"), &burn::tensor::Device::flex())
            .unwrap();
    (
        history_without_times(dir),
        test["metrics"].clone(),
        model.parameters().unwrap(),
    )
}

/// Flushing subnormals to zero (the default) and keeping them (`TRAINER_SUBNORMALS=keep`) give
/// the same run, to the bit, where no value falls below 1.2e-38: the mode changes speed, not
/// results. (On the article's full run it changes no reported figure either: README,
/// "Subnormals".)
#[test]
fn flushing_subnormals_changes_no_result() {
    let tmp = tempfile::tempdir().unwrap();
    let runs: Vec<_> = [None, Some("keep")]
        .into_iter()
        .map(|mode| {
            let dir = tmp.path().join(mode.unwrap_or("flush"));
            let mut cmd = trainer(&["train", "-q", "--epochs", "2", "--out"]);
            cmd.arg(&dir).args(SUBSET).arg("--data-dir").arg(data_dir());
            if let Some(mode) = mode {
                cmd.env("TRAINER_SUBNORMALS", mode);
            }
            let out = run(&mut cmd);
            assert!(out.status.success(), "{}", text(&out.stderr));
            run_result(&dir)
        })
        .collect();
    assert_eq!(runs[0].0, runs[1].0, "history");
    assert_eq!(runs[0].1, runs[1].1, "test result");
    assert!(runs[0].2 == runs[1].2, "final weights");
}

/// The epochs a run directory's history holds (0 before it has one).
fn epochs_written(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("history.jsonl")).map_or(0, |history| history.lines().count())
}

/// Whether a run directory's last start ended `finished` (false before it has a config).
fn last_start_finished(dir: &Path) -> bool {
    let config: Option<serde_json::Value> = std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok());
    let last = config
        .as_ref()
        .and_then(|c| c["starts"].as_array()?.last().cloned());
    last.is_some_and(|start| start["ended"]["how"] == "finished")
}

/// Killed with SIGKILL at moments drawn from a fixed seed (before its directory exists,
/// before its first checkpoint, mid-epoch, while writing, between its last epoch and the test
/// pass, while plotting …) and started again each time with the same command, a run ends with
/// the weights, history, test result and TensorBoard scalars of one that ran straight through,
/// to the bit; early stopping included. The first two attempts are killed as soon as they
/// have written an epoch of their own (so at least two kills fall mid-run however loaded the
/// machine is: a straight run timed under load can be longer than the attempts after it).
#[test]
fn a_run_killed_anywhere_resumes_to_the_straight_result() {
    use rand::{RngExt, SeedableRng};
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    #[rustfmt::skip]
    let recipes: [&[&str]; 2] = [
        &["--epochs", "6", "--train-limit", "20000", "--valid-size", "2000", "--test-limit", "2000",
          "--seed", "5", "--keep", "all", "--dropout", "0.1"],
        &["--epochs", "30", "--train-limit", "50000", "--valid-size", "2000", "--test-limit", "2000",
          "--seed", "5", "--lr", "0.02", "--patience", "2"],
    ];
    for (r, recipe) in recipes.iter().enumerate() {
        let straight = tmp.path().join(format!("straight-{r}"));
        let started = std::time::Instant::now();
        let out = run(trainer(&["train", "-q", "--out"])
            .arg(&straight)
            .args(*recipe)
            .arg("--data-dir")
            .arg(data_dir()));
        assert!(out.status.success(), "{}", text(&out.stderr));
        // Kill moments: fractions of the straight run's time, from the seed.
        let whole = started.elapsed();
        let dir = tmp.path().join(format!("killed-{r}"));
        let mut kills = 0;
        for attempt in 0.. {
            let mut cmd = trainer(&["train", "-q"]);
            // The same command each time: --resume once the directory exists.
            cmd.arg(if dir.exists() { "--resume" } else { "--out" })
                .arg(&dir)
                .args(*recipe)
                .arg("--data-dir")
                .arg(data_dir())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped());
            let epochs_before = epochs_written(&dir);
            let mut child = cmd.spawn().unwrap();
            // Thirty attempts are killed if they are not done by then, each within the first
            // half of a whole run's time (so most are); the next runs to the end.
            let deadline = (attempt < 30)
                .then(|| std::time::Instant::now() + whole.mul_f64(rng.random_range(0.0..0.5)));
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break Some(status);
                }
                let due = if attempt < 2 {
                    epochs_written(&dir) > epochs_before
                } else {
                    deadline.is_some_and(|d| std::time::Instant::now() >= d)
                };
                if due {
                    break None;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            };
            match status {
                Some(status) => {
                    let mut stderr = String::new();
                    use std::io::Read;
                    child
                        .stderr
                        .take()
                        .unwrap()
                        .read_to_string(&mut stderr)
                        .unwrap();
                    assert!(status.success(), "after {kills} kills: {stderr}");
                    break;
                }
                None => {
                    child.kill().unwrap(); // SIGKILL
                    child.wait().unwrap();
                    // Killed on its way out, after it said it finished: done (the same
                    // command again would be refused, as for any finished run).
                    if last_start_finished(&dir) {
                        break;
                    }
                    kills += 1;
                }
            }
        }
        eprintln!("recipe {r}: {kills} kills in runs of {whole:?}");
        assert!(kills >= 2, "recipe {r}: only {kills} kills in {whole:?}");
        let (got, want) = (run_result(&dir), run_result(&straight));
        assert_eq!(got.0, want.0, "recipe {r}, {kills} kills: history");
        assert_eq!(got.1, want.1, "recipe {r}, {kills} kills: test result");
        assert!(got.2 == want.2, "recipe {r}, {kills} kills: final weights");
        // TensorBoard sees each epoch once, with the straight run's values.
        assert_eq!(
            crate::support::events(&dir),
            crate::support::events(&straight),
            "recipe {r}, {kills} kills: TensorBoard events"
        );
        if r == 1 {
            assert!(want.0.len() < 30, "recipe 1 stops early");
        }
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}

/// A reader that stops early (`trainer evaluate ... | head -1`) ends the output, not in a panic:
/// the exit code stays 0 and nothing is said on stderr.
#[test]
fn a_closed_stdout_is_no_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    train_into(&dir, &[]);
    let mut child = trainer(&["evaluate", "-q", "--model"])
        .arg(&dir)
        .arg("--data-dir")
        .arg(data_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Closed long before the model is loaded and evaluated.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
}

/// Two processes never work in one run directory: the second is refused, clearly.
#[test]
fn a_run_directory_takes_one_process_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let mut first = trainer(&["train", "-q", "--epochs", "30", "--out"])
        .arg(&dir)
        .arg("--data-dir")
        .arg(data_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !dir.join("config.json").is_file() {
        assert!(start.elapsed().as_secs() < 60, "the run did not start");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let second = run(trainer(&["train", "--resume"])
        .arg(&dir)
        .arg("--data-dir")
        .arg(data_dir()));
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(second.status.code(), Some(1));
    let stderr = text(&second.stderr);
    assert!(
        stderr.contains("another trainer process is working in this run directory"),
        "{stderr}"
    );
    // With the first one gone, the run continues.
    let resumed = run(trainer(&["train", "-q", "--resume"])
        .arg(&dir)
        .arg("--epochs")
        .arg("1")
        .arg("--data-dir")
        .arg(data_dir()));
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
}

/// A recipe flag that contradicts the run's recipe is refused on --resume, naming it; flags
/// that repeat it pass.
#[test]
fn resume_refuses_a_different_recipe_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let recipe = ["--epochs", "1", "--train-limit", "500", "--lr", "0.002"];
    let small = ["--valid-size", "100", "--test-limit", "100"];
    let first = run(trainer(&["train", "-q", "--out"])
        .arg(&dir)
        .args(recipe)
        .args(small)
        .arg("--data-dir")
        .arg(data_dir()));
    assert!(first.status.success(), "{}", text(&first.stderr));
    let changed = run(trainer(&["train", "--resume"])
        .arg(&dir)
        .args(["--epochs", "2", "--lr", "0.5"])
        .arg("--data-dir")
        .arg(data_dir()));
    assert_eq!(changed.status.code(), Some(1));
    let stderr = text(&changed.stderr);
    assert!(
        stderr.contains("--lr 0.5 differs from the run's recipe (--lr 0.002)"),
        "{stderr}"
    );
    let same = run(trainer(&["train", "-q", "--resume"])
        .arg(&dir)
        .args(["--epochs", "2", "--prefetch", "0"])
        .args(recipe.iter().skip(2))
        .args(small)
        .arg("--data-dir")
        .arg(data_dir()));
    assert!(same.status.success(), "{}", text(&same.stderr));
}

#[test]
fn a_second_interrupt_exits_at_once_and_the_checkpoint_still_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let stopped = interrupt_run("flex", &[], &dir, 2);
    assert_eq!(
        stopped.status.code(),
        Some(130),
        "{}",
        text(&stopped.stderr)
    );
    let resumed = run(trainer(&["train", "--resume"])
        .arg(&dir)
        .arg("--data-dir")
        .arg(data_dir()));
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files cleaned up");
}
