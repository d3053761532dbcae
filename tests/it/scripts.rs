//! The measuring scripts as the README runs them, smaller: `scripts/bench` on flex (both
//! steps, one and two threads, the FP32 bound) and `scripts/profile` on the fused MLP step
//! (perf samples by group, set against the arithmetic). `scripts/gpu_check` runs
//! `scripts/bench` on wgpu (tests/it/gpu.rs).

use std::path::Path;
use std::process::Command;

use crate::support::{data_dir, missing, python, run, runs, text, trainer_binary};

fn script(name: &str) -> Command {
    let mut cmd = Command::new(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("scripts")
            .join(name),
    );
    cmd.arg("--trainer")
        .arg(trainer_binary())
        .env("TRAINER_DATA_DIR", data_dir());
    cmd
}

/// `scripts/bench` on flex: the fused and the generic step, each on one thread and two, the
/// fused one's speed against the generic one's, and the machine's FP32 bound (NumPy's here)
/// with each row's share of it.
#[test]
fn bench_measures_both_cpu_steps_on_one_and_two_threads() {
    let Some(python) = python() else { return };
    let out = run(script("bench")
        .args([
            "--backends",
            "flex",
            "--batch-sizes",
            "256",
            "--epochs",
            "2",
        ])
        .args(["--threads", "1,2", "--python"])
        .arg(python));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("machine: "), "{stdout}");
    assert!(stdout.contains("FP32 bound: "), "{stdout}");
    for row in [
        "flex b256 fused t1",
        "flex b256 fused t2",
        "flex b256 generic t1",
        "flex b256 generic t2",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no row {row}: {stdout}"));
        assert!(line.contains("of the FP32 bound"), "{line}");
        if row.contains("fused") {
            assert!(line.contains("train vs generic"), "{line}");
        }
    }
}

/// `scripts/profile` on the fused MLP step: most named samples fall in its groups, and the
/// step is set against the arithmetic and the FP32 bound.
#[test]
fn profile_shows_where_the_fused_cpu_step_spends_its_time() {
    if !runs("perf", "--version") {
        missing("no perf (Debian: linux-perf)", "TRAINER_REQUIRE_PERF");
        return;
    }
    let Some(python) = python() else { return };
    let out = run(script("profile")
        .args([
            "--model",
            "mlp",
            "--batch-size",
            "256",
            "--train-limit",
            "20000",
        ])
        .args(["--epochs", "3", "--python"])
        .arg(python));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("fused MLP step: vector products"),
        "{stdout}"
    );
    assert!(stdout.contains("against the arithmetic"), "{stdout}");
    assert!(stdout.contains("% of the FP32 bound"), "{stdout}");
}
