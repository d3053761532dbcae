//! `trainer sweep` with many workers on one sweep directory: concurrent workers, a killed
//! one, a paused one, static shards, the sweep's record, failures, `--report`; and the Slurm
//! and Kubernetes files that start such workers.

// The wgpu helper of `common` is not used here.
#[allow(dead_code)]
mod common;
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{data_dir, python, run, text, trainer};

/// The grid of these tests: 2 rates × 2 seeds on a small real subset.
const GRID: [&str; 6] = ["--epochs", "3", "--lr", "0.01,0.001", "--seed", "1,2"];
const LABELS: [&str; 4] = [
    "mlp-h30x10-lr0.01-b32-e3-s1",
    "mlp-h30x10-lr0.01-b32-e3-s2",
    "mlp-h30x10-lr0.001-b32-e3-s1",
    "mlp-h30x10-lr0.001-b32-e3-s2",
];

fn sweep(out: &Path, extra: &[&str]) -> Command {
    let mut cmd = trainer(&["sweep", "--out"]);
    cmd.arg(out).args(GRID).args(extra).args([
        "--",
        "--train-limit",
        "10000",
        "--valid-size",
        "1000",
        "--test-limit",
        "1000",
        "--data-dir",
    ]);
    cmd.arg(data_dir());
    cmd
}

fn spawn(mut cmd: Command) -> Child {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    stderr
}

/// The results table without its timings: what must not depend on how the sweep was run.
fn table(out: &Path) -> Vec<String> {
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    csv.lines()
        .map(|l| l.rsplit_once(',').unwrap().0.to_string())
        .collect()
}

/// How many times a point's run was started (its first start and each resume).
fn starts(out: &Path, label: &str) -> usize {
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join(label).join("config.json")).unwrap())
            .unwrap();
    config["starts"].as_array().unwrap().len()
}

fn wait_for(what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "waited for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The same grid run by one process and by four at once gives the same table; with four,
/// every point ran once, in one start, under one claim.
#[test]
fn four_workers_make_the_table_one_makes() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, four) = (tmp.path().join("one"), tmp.path().join("four"));
    finish(spawn(sweep(&one, &[])));
    let workers: Vec<Child> = (0..4).map(|_| spawn(sweep(&four, &[]))).collect();
    let logs: Vec<String> = workers.into_iter().map(finish).collect();
    assert_eq!(table(&four), table(&one));
    assert_eq!(table(&one).len(), 1 + LABELS.len());
    for label in LABELS {
        assert_eq!(starts(&four, label), 1, "{label}");
        assert!(four.join(".claims").join(label).join("000001").is_dir());
        assert!(!four.join(".claims").join(label).join("000002").exists());
    }
    // Every point was trained by exactly one of the workers.
    let trained: usize = logs
        .iter()
        .map(|l| l.lines().filter(|l| l.contains(" INFO sweep run=")).count())
        .sum();
    assert_eq!(trained, LABELS.len(), "{logs:#?}");
}

/// A worker killed in the middle of a point leaves it to the others, who take it over (at
/// once: its process is gone from this machine, no need to wait the hour of `--stale-after`)
/// and resume its checkpoint: the table is the straight sweep's.
#[test]
fn a_killed_workers_point_is_taken_over_and_resumed() {
    let tmp = tempfile::tempdir().unwrap();
    let (reference, out) = (tmp.path().join("reference"), tmp.path().join("out"));
    finish(spawn(sweep(&reference, &[])));
    let mut doomed = spawn(sweep(&out, &[]));
    let first = out.join(LABELS[0]);
    wait_for("the first epoch's checkpoint", || {
        first.join("checkpoint.ckpt").exists()
    });
    doomed.kill().unwrap(); // SIGKILL
    doomed.wait().unwrap();
    assert!(!first.join("test.json").exists(), "killed too late");
    let mut workers: Vec<Child> = (0..2)
        .map(|_| spawn(sweep(&out, &["--stale-after", "1h"])))
        .collect();
    let waited = Instant::now();
    while workers.iter_mut().any(|w| w.try_wait().unwrap().is_none()) {
        if waited.elapsed() > Duration::from_secs(120) {
            workers
                .iter_mut()
                .for_each(|w| w.kill().unwrap_or_default());
            panic!("the workers waited for the dead worker's claim to go stale");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    workers.into_iter().for_each(|w| {
        finish(w);
    });
    assert_eq!(table(&out), table(&reference));
    assert_eq!(starts(&out, LABELS[0]), 2, "started, killed, resumed once");
    for label in &LABELS[1..] {
        assert_eq!(starts(&out, label), 1, "{label}");
    }
}

/// A worker paused past the stale time finds, when it goes on, that its point was taken
/// over: it stops working on it before writing, and the sweep ends as a straight one.
#[test]
fn a_paused_worker_finds_its_claim_lost_and_stops() {
    let tmp = tempfile::tempdir().unwrap();
    let (reference, out) = (tmp.path().join("reference"), tmp.path().join("out"));
    finish(spawn(sweep(&reference, &[])));
    let paused = spawn(sweep(&out, &["--stale-after", "1s"]));
    let pid = paused.id().to_string();
    let first = out.join(LABELS[0]);
    wait_for("the first epoch's checkpoint", || {
        first.join("checkpoint.ckpt").exists()
    });
    let signal = |sig: &str| {
        assert!(
            Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    signal("-STOP");
    let other = spawn(sweep(&out, &["--stale-after", "1s"]));
    let claim = out.join(".claims").join(LABELS[0]).join("000002");
    wait_for("the takeover", || claim.exists());
    signal("-CONT");
    let paused_log = finish(paused);
    finish(other);
    assert!(
        paused_log.contains("another worker took this point over"),
        "{paused_log}"
    );
    assert_eq!(table(&out), table(&reference));
}

/// `--shard K/N` runs exactly its share of the points; the shares make the whole table.
#[test]
fn shards_run_their_share_and_make_the_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let (reference, out) = (tmp.path().join("reference"), tmp.path().join("out"));
    finish(spawn(sweep(&reference, &[])));
    finish(spawn(sweep(&out, &["--shard", "1/2"])));
    let ran: Vec<bool> = LABELS.iter().map(|l| out.join(l).exists()).collect();
    assert_eq!(ran, [true, false, true, false]);
    let partial = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(partial.contains("2 more points to run"), "{partial}");
    finish(spawn(sweep(&out, &["--shard", "2/2"])));
    assert_eq!(table(&out), table(&reference));
}

/// A sweep directory keeps its grid and recipe: another grid or recipe is refused by name,
/// other machine flags are not; `--report` rebuilds the tables from the run directories.
#[test]
fn a_sweep_directory_keeps_its_grid_and_rebuilds_its_report() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    finish(spawn(sweep(&out, &[])));
    let before = std::fs::read_to_string(out.join("results.md")).unwrap();

    let mut other_grid = trainer(&["sweep", "--out"]);
    other_grid
        .arg(&out)
        .args(["--lr", "0.1", "--", "--data-dir"])
        .arg(data_dir());
    let refused = run(&mut other_grid);
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused.stderr).contains("was started with another grid"));

    let mut other_recipe = trainer(&["sweep", "--out"]);
    other_recipe
        .arg(&out)
        .args(GRID)
        .args(["--", "--train-limit", "500", "--data-dir"])
        .arg(data_dir());
    let refused = run(&mut other_recipe);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("was started with other training flags (-- --train-limit 10000"),
        "{stderr}"
    );

    // The same sweep from another machine's flags (logging, backend) is the same sweep.
    finish(spawn({
        let mut cmd = sweep(&out, &[]);
        cmd.args(["--backend", "flex", "--prefetch", "1"]);
        cmd
    }));

    std::fs::remove_file(out.join("results.md")).unwrap();
    std::fs::remove_file(out.join("results.csv")).unwrap();
    let report = run(trainer(&["sweep", "--report", "--out"]).arg(&out));
    assert!(report.status.success(), "{}", text(&report.stderr));
    assert_eq!(
        std::fs::read_to_string(out.join("results.md")).unwrap(),
        before
    );
    assert_eq!(text(&report.stdout).trim_end(), before.trim_end());
}

/// A point that fails the same way `--max-failures` times is given up, named in the table
/// with its error, and the sweep ends with exit code 1.
#[test]
fn a_point_that_keeps_failing_is_given_up() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let missing = tmp.path().join("no-data");
    let failed = run(
        trainer(&["sweep", "--max-failures", "2", "--seed", "1,2", "--out"])
            .arg(&out)
            .args(["--", "--data-dir"])
            .arg(&missing),
    );
    let stderr = text(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{stderr}");
    assert!(
        stderr
            .lines()
            .last()
            .unwrap()
            .contains("2 of the sweep's points failed"),
        "{stderr}"
    );
    let results = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(results.contains("Failed"), "{results}");
    assert!(
        results.contains(&missing.display().to_string()),
        "{results}"
    );
    let failures: Vec<String> = serde_json::from_slice(
        &std::fs::read(out.join(".claims/mlp-h30x10-lr0.001-b32-s1/failures.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(failures.len(), 2);
}

/// The Slurm script is valid bash and runs a command `trainer` accepts; the Kubernetes
/// manifest parses, is an indexed Job on a shared volume and runs the Slurm script's sweep
/// (`scripts/check_cluster.py`; no cluster is reachable here).
#[test]
fn the_cluster_files_run_the_same_sweep() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("scripts/cluster/sweep.sbatch");
    let syntax = run(Command::new("bash").arg("-n").arg(&script));
    assert!(syntax.status.success(), "{}", text(&syntax.stderr));
    let tmp = tempfile::tempdir().unwrap();
    let dry = run(Command::new("bash")
        .arg(&script)
        .env("DRY_RUN", "1")
        .env("TRAINER", env!("CARGO_BIN_EXE_trainer"))
        .env("SWEEP_DIR", tmp.path().join("sweep"))
        .env("DATA_DIR", data_dir()));
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    let line = text(&dry.stdout).trim().to_string();
    assert!(line.contains(" sweep --out "), "{line}");
    // The flags parse: with --report the command stops at the missing sweep.json (exit 1),
    // not at a flag (exit 2).
    let parsed =
        run(Command::new("bash")
            .arg("-c")
            .arg(line.replacen(" sweep ", " sweep --report ", 1)));
    let stderr = text(&parsed.stderr);
    assert_eq!(parsed.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("sweep.json"), "{stderr}");

    let Some(python) = python() else { return };
    let checked = run(Command::new(python)
        .arg(root.join("scripts/check_cluster.py"))
        .arg(root.join("scripts/cluster/sweep-job.yaml"))
        .arg("--slurm-command")
        .arg(&line));
    assert!(
        checked.status.success(),
        "{}{}",
        text(&checked.stdout),
        text(&checked.stderr)
    );
}
