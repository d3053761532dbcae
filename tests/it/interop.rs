//! Files other tools read and write, seen from outside: `trainer export`'s safetensors and
//! ONNX files and a run's TensorBoard events, checked by NumPy, ONNX Runtime and TensorBoard's
//! own reader on the real test set (`scripts/check_interop.py`); a model trained by PyTorch,
//! evaluated here; `--init-from`.
//!
//! The checks by other tools need a Python with `scripts/requirements-tests.txt` named by
//! `$TRAINER_PYTHON`; without one they are skipped with a `SKIPPED` line, unless
//! `TRAINER_REQUIRE_PYTHON=1` (as CI sets it) makes them fail.

use std::path::Path;

use crate::support::{data_dir, python, result, run, text, trainer};

fn succeed(cmd: &mut std::process::Command) -> std::process::Output {
    let out = run(cmd);
    assert!(out.status.success(), "{}", text(&out.stderr));
    out
}

/// Trains a short run of `recipe` into `dir` on all 10,000 test images.
fn train(dir: &Path, recipe: &[&str]) {
    succeed(
        trainer(&["train", "-q", "--valid-size", "1000", "--out"])
            .arg(dir)
            .args(recipe)
            .arg("--data-dir")
            .arg(data_dir()),
    );
}

fn export(model: &Path, out: &Path) {
    succeed(
        trainer(&["export", "-q", "--model"])
            .arg(model)
            .arg("--out")
            .arg(out),
    );
}

/// `evaluate --json`'s metrics of `model`, its per-image predictions written to `predictions`.
fn evaluate(model: &Path, predictions: &Path) -> serde_json::Value {
    let out = succeed(
        trainer(&["evaluate", "-q", "--json", "--model"])
            .arg(model)
            .arg("--predictions")
            .arg(predictions)
            .arg("--data-dir")
            .arg(data_dir()),
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    report["metrics"].clone()
}

/// Exported as safetensors and read back, a model makes the same predictions with the same
/// loss, to the bit, as the model file it came from; exporting the safetensors file again
/// changes nothing either. The MLP of other widths and the CNN too.
#[test]
fn an_export_reads_back_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, recipe) in [
        (
            "mlp",
            &[
                "--epochs",
                "1",
                "--train-limit",
                "2000",
                "--hidden",
                "40,20,12",
            ][..],
        ),
        (
            "cnn",
            &["--epochs", "1", "--train-limit", "500", "--model", "cnn"][..],
        ),
    ] {
        let dir = tmp.path().join(name);
        train(&dir, recipe);
        let file = tmp.path().join(format!("{name}.safetensors"));
        export(&dir, &file);
        let again = tmp.path().join(format!("{name}-again.safetensors"));
        export(&file, &again);
        let p = |n: &str| tmp.path().join(format!("{name}-{n}.csv"));
        let original = evaluate(&dir.join("model.model"), &p("model"));
        assert_eq!(evaluate(&file, &p("export")), original, "{name}");
        assert_eq!(evaluate(&again, &p("again")), original, "{name}");
        let read = |n: &str| std::fs::read_to_string(p(n)).unwrap();
        assert_eq!(
            read("export"),
            read("model"),
            "{name}: per-image predictions"
        );
        assert_eq!(
            read("again"),
            read("model"),
            "{name}: per-image predictions"
        );
    }
}

/// NumPy code written for PyTorch's layout and ONNX Runtime classify the 10,000 test images
/// as `trainer evaluate` does, and TensorBoard's reader sees `history.csv` in the event file:
/// for the article's MLP and for the CNN.
#[test]
fn other_tools_read_the_exports_and_the_events_alike() {
    let Some(python) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_interop.py");
    for (name, recipe) in [
        ("mlp", &["--epochs", "2", "--train-limit", "10000"][..]),
        (
            "cnn",
            &["--epochs", "1", "--train-limit", "2000", "--model", "cnn"][..],
        ),
    ] {
        let dir = tmp.path().join(name);
        train(&dir, recipe);
        let (st, onnx) = (
            tmp.path().join(format!("{name}.safetensors")),
            tmp.path().join(format!("{name}.onnx")),
        );
        export(&dir, &st);
        export(&dir, &onnx);
        let predictions = tmp.path().join(format!("{name}.csv"));
        evaluate(&dir.join("model.model"), &predictions);
        let out = run(std::process::Command::new(&python)
            .arg(&script)
            .arg("--data-dir")
            .arg(data_dir())
            .arg("--run")
            .arg(&dir)
            .arg("--safetensors")
            .arg(&st)
            .arg("--onnx")
            .arg(&onnx)
            .arg("--predictions")
            .arg(&predictions));
        assert!(
            out.status.success(),
            "{name}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        eprintln!("{name}: {}", text(&out.stdout).trim());
    }
}

/// The article's MLP trained by PyTorch (`scripts/torch_fixture.py`, saved by
/// `safetensors.torch.save_file`, no metadata) is evaluated here to the test accuracy PyTorch
/// measured for it: at most one image apart (a tie may fall the other way), loss to 1e-4.
#[test]
fn a_pytorch_trained_model_is_evaluated_to_pytorchs_accuracy() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let recorded: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures.join("torch_article_mlp.json")).unwrap(),
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let got = evaluate(
        &fixtures.join("torch_article_mlp.safetensors"),
        &tmp.path().join("p.csv"),
    );
    let (acc, loss) = (
        got["accuracy"].as_f64().unwrap(),
        got["loss"].as_f64().unwrap(),
    );
    let want_acc = recorded["test_accuracy"].as_f64().unwrap();
    let want_loss = recorded["test_loss"].as_f64().unwrap();
    assert!(
        (acc - want_acc).abs() <= 1e-4 + 1e-9,
        "{acc} vs PyTorch's {want_acc}"
    );
    assert!(
        (loss - want_loss).abs() <= 1e-4,
        "{loss} vs PyTorch's {want_loss}"
    );
}

/// `--init-from` starts from the file's weights (a rate too small to move them keeps
/// PyTorch's accuracy, where the seed's weights would guess), takes the file's network,
/// records the file, and is refused with `--resume` or with a contradicting `--model`.
#[test]
fn init_from_starts_from_the_files_weights() {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_article_mlp.safetensors");
    let recorded: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.with_extension("json")).unwrap())
            .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let out = succeed(
        trainer(&[
            "train",
            "-q",
            "--epochs",
            "1",
            "--lr",
            "1e-9",
            "--train-limit",
            "500",
        ])
        .arg("--init-from")
        .arg(&fixture)
        .arg("--out")
        .arg(&dir)
        .arg("--data-dir")
        .arg(data_dir()),
    );
    let want = recorded["test_accuracy"].as_f64().unwrap();
    let acc = result(&out, "test_acc");
    assert!((acc - want).abs() <= 0.001, "{acc} vs {want}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["recipe"]["init_from"], fixture.to_str().unwrap());
    assert_eq!(config["recipe"]["hidden"], serde_json::json!([30, 10]));

    let refused = run(trainer(&["train", "--resume"])
        .arg(&dir)
        .arg("--init-from")
        .arg(&fixture));
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    let refused = run(trainer(&["train", "--model", "cnn", "--init-from"])
        .arg(&fixture)
        .arg("--data-dir")
        .arg(data_dir()));
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--model cnn differs from the file's network (--model mlp)"),
        "{stderr}"
    );
}

/// A safetensors file that is damaged or fits no network is one line naming it, exit 1.
#[test]
fn a_bad_safetensors_file_is_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.safetensors");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_article_mlp.safetensors"),
        &good,
    )
    .unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let cut = tmp.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let huge = tmp.path().join("huge.safetensors");
    // A header length of 2^60 bytes.
    std::fs::write(&huge, (1u64 << 60).to_le_bytes()).unwrap();
    let odd = tmp.path().join("odd.safetensors");
    // Valid safetensors, one tensor that is no layer of any network here.
    let header = br#"{"head.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}}"#;
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header);
    file.extend_from_slice(&[0u8; 24]);
    std::fs::write(&odd, file).unwrap();
    for (path, what) in [
        (&cut, "not a safetensors file"),
        (&huge, "not a safetensors file"),
        (&odd, "expected the layers"),
    ] {
        for command in ["evaluate", "export"] {
            let mut cmd = trainer(&[command, "--model"]);
            cmd.arg(path);
            if command == "export" {
                cmd.arg("--out").arg(tmp.path().join("x.onnx"));
            } else {
                cmd.arg("--data-dir").arg(data_dir());
            }
            let out = run(&mut cmd);
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{stderr}");
            let last = stderr.lines().last().unwrap_or_default();
            assert!(
                last.starts_with(&format!("error: {}: ", path.display())) && last.contains(what),
                "{path:?}: {stderr}"
            );
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
    }
}
