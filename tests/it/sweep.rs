//! `trainer sweep` with many workers on one sweep directory: concurrent workers, a killed
//! one, a paused one, one stopped by SIGTERM while it waits, static shards, the sweep's
//! record, failures, `--report`; and the Slurm and Kubernetes files that start such workers,
//! run as written: on a one-node Slurm cluster, and as two local "pods".

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{data_dir, python, run, text, trainer};

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

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
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
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains(&format!(
            "was started with another grid (only in the record: {}; only asked: mlp-h30x10-lr0.1-b32-s42)",
            LABELS.join(", ")
        )),
        "{stderr}"
    );

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
        stderr.contains(
            "was started with other training flags (--test-limit: recorded 1000, asked none; \
             --train-limit: recorded 10000, asked 500; --valid-size: recorded 1000, asked 5000)"
        ),
        "{stderr}"
    );

    // The same points in another order are the same grid; another machine's flags (logging,
    // backend) make the same sweep, and logging flags after `--` mean what they mean before
    // it.
    let mut reordered = trainer(&["sweep", "--out"]);
    reordered
        .arg(&out)
        .args(["--seed", "2,1", "--lr", "0.001,0.01", "--epochs", "3"])
        .args(["--", "--train-limit", "10000", "--valid-size", "1000"])
        .args([
            "--test-limit",
            "1000",
            "--backend",
            "flex",
            "--prefetch",
            "1",
        ])
        .args(["--log-format", "json", "--data-dir"])
        .arg(data_dir());
    let log = finish(spawn(reordered));
    let worker = log
        .lines()
        .find(|l| l.contains("sweep worker"))
        .unwrap_or_else(|| panic!("{log}"));
    let worker: serde_json::Value = serde_json::from_str(worker).unwrap();
    assert_eq!(worker["points"], 4, "{worker}");

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
/// with its error, and the sweep ends with exit code 1; data that cannot be read stops the
/// sweep at once, before any point.
#[test]
fn a_point_that_keeps_failing_is_given_up() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // Early stopping without validation images: every point fails the same way.
    let failed = run(
        trainer(&["sweep", "--max-failures", "2", "--seed", "1,2", "--out"])
            .arg(&out)
            .args(["--", "--patience", "2", "--valid-size", "0", "--data-dir"])
            .arg(data_dir()),
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
        results.contains("--patience needs a validation set"),
        "{results}"
    );
    let failures: Vec<String> = serde_json::from_slice(
        &std::fs::read(out.join(".claims/mlp-h30x10-lr0.001-b32-s1/failures.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(failures.len(), 2);

    let missing = tmp.path().join("no-data");
    let stopped = run(trainer(&["sweep", "--out"])
        .arg(tmp.path().join("other"))
        .args(["--", "--data-dir"])
        .arg(&missing));
    assert_eq!(stopped.status.code(), Some(1));
    assert!(text(&stopped.stderr).contains(&missing.display().to_string()));
    assert!(
        !tmp.path().join("other/.claims").exists(),
        "no point was claimed"
    );
}

/// `--report` checks the training flags after `--` as a sweep does: a bad one is refused
/// (exit 2) before anything is read.
#[test]
fn report_checks_the_flags_after_the_separator() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(trainer(&["sweep", "--report", "--out"])
        .arg(tmp.path())
        .args(["--", "--no-such-flag"]));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("'--no-such-flag'"), "{stderr}");
}

/// A child whose stderr is read as it comes, so that a test can wait for a line.
struct Watched {
    child: Child,
    log: Arc<Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
}

impl Watched {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (stderr, sink) = (child.stderr.take().unwrap(), log.clone());
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Self { child, log, reader }
    }

    fn wait_for_line(&self, needle: &str) {
        wait_for(needle, || self.log.lock().unwrap().contains(needle));
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// Waits for the end; returns the exit code, the time it took and the log.
    fn finish(mut self) -> (Option<i32>, Duration, String) {
        let start = Instant::now();
        let status = self.child.wait().unwrap();
        let took = start.elapsed();
        self.reader.join().unwrap();
        let log = self.log.lock().unwrap().clone();
        (status.code(), took, log)
    }
}

/// A worker waiting for a point another worker holds stops within a second of SIGTERM with
/// code 130; the holder, stopped by SIGTERM while training, releases its point with a
/// checkpoint, and the same command again resumes it at once (not after `--stale-after`) and
/// finishes the sweep as a straight one would.
#[test]
fn a_waiting_worker_stops_at_once_and_a_stopped_point_is_resumed_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (reference, out) = (tmp.path().join("reference"), tmp.path().join("out"));
    let one_point = |dir: &Path| {
        let mut cmd = trainer(&["sweep", "--stale-after", "1h", "--epochs", "20", "--out"]);
        cmd.arg(dir)
            .args(["--", "--train-limit", "20000", "--valid-size", "1000"])
            .args(["--test-limit", "1000", "--data-dir"])
            .arg(data_dir());
        cmd
    };
    finish(spawn(one_point(&reference)));
    let label = "mlp-h30x10-lr0.001-b32-e20-s42";

    let holder = Watched::spawn(one_point(&out));
    holder.wait_for_line("INFO sweep run=");
    let waiter = Watched::spawn(one_point(&out));
    waiter.wait_for_line("sweep worker");
    std::thread::sleep(Duration::from_millis(300)); // into its wait
    assert!(
        !out.join(label).join("test.json").exists(),
        "the point ended too soon"
    );
    waiter.signal("-TERM");
    let (code, took, log) = waiter.finish();
    assert_eq!(code, Some(130), "{log}");
    assert!(took < Duration::from_secs(1), "took {took:?}: {log}");
    assert!(
        log.contains("interrupted; run the same `trainer sweep"),
        "{log}"
    );

    holder.signal("-TERM");
    let (code, _, log) = holder.finish();
    assert_eq!(code, Some(130), "{log}");
    assert!(
        !out.join(label).join("test.json").exists(),
        "the holder finished first"
    );

    let again = Watched::spawn(one_point(&out));
    let (code, took, log) = again.finish();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        took < Duration::from_secs(60),
        "waited {took:?} for the released claim"
    );
    assert!(log.contains("resuming"), "{log}");
    assert_eq!(table(&out), table(&reference));
    assert_eq!(starts(&out, label), 2, "started, stopped, resumed once");
    assert!(out.join(".claims").join(label).join("000002").is_dir());
    assert!(!out.join(".claims").join(label).join("000003").exists());
}

/// The checkout's root.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The command `sweep.sbatch` runs, as its DRY_RUN=1 prints it, for `sweep_dir`.
fn sbatch_line(sweep_dir: &Path) -> String {
    let dry = run(Command::new("bash")
        .arg(root().join("scripts/cluster/sweep.sbatch"))
        .env("DRY_RUN", "1")
        .env("TRAINER", env!("CARGO_BIN_EXE_trainer"))
        .env("SWEEP_DIR", sweep_dir)
        .env("DATA_DIR", data_dir()));
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    text(&dry.stdout).trim().to_string()
}

/// The small grid the cluster tests give the cluster files through their environment (a
/// user runs the files' defaults, the README's grid).
const CLUSTER_GRID: &str = "--lr 0.01,0.001,0.003 --epochs 3";
const CLUSTER_FLAGS: &str =
    "--train-limit 10000 --valid-size 1000 --test-limit 1000 --backend flex --log-format json";
const CLUSTER_LABELS: [&str; 3] = [
    "mlp-h30x10-lr0.01-b32-e3-s42",
    "mlp-h30x10-lr0.001-b32-e3-s42",
    "mlp-h30x10-lr0.003-b32-e3-s42",
];

/// The table one process makes of the cluster tests' grid.
fn cluster_reference(dir: &Path) -> Vec<String> {
    let mut cmd = trainer(&["sweep", "--out"]);
    cmd.arg(dir)
        .args(CLUSTER_GRID.split(' '))
        .arg("--")
        .args(CLUSTER_FLAGS.split(' '))
        .arg("--data-dir")
        .arg(data_dir());
    finish(spawn(cmd));
    table(dir)
}

/// The claim generations of each point of a sweep.
fn generations(out: &Path, label: &str) -> Vec<String> {
    let mut gens: Vec<String> = std::fs::read_dir(out.join(".claims").join(label))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.chars().all(|c| c.is_ascii_digit()))
        .collect();
    gens.sort();
    gens
}

/// The line the Slurm script prints with DRY_RUN=1, run as printed: it trains (the grid and
/// the flags after `--` from the environment, logging flags among them); and the script is
/// valid bash.
#[test]
fn the_slurm_scripts_printed_command_runs() {
    let script = root().join("scripts/cluster/sweep.sbatch");
    let syntax = run(Command::new("bash").arg("-n").arg(&script));
    assert!(syntax.status.success(), "{}", text(&syntax.stderr));
    let tmp = tempfile::tempdir().unwrap();
    let default_line = sbatch_line(&tmp.path().join("sweep"));
    assert!(
        default_line.contains("--lr 3e-4\\,1e-3\\,3e-3 --batch-size 32\\,128 --epochs 30"),
        "{default_line}"
    );
    let dry = run(Command::new("bash")
        .arg(&script)
        .env("DRY_RUN", "1")
        .env("TRAINER", env!("CARGO_BIN_EXE_trainer"))
        .env("SWEEP_DIR", tmp.path().join("sweep"))
        .env("DATA_DIR", data_dir())
        .env("SWEEP_GRID", "--epochs 1 --seed 5")
        .env(
            "SWEEP_FLAGS",
            "--train-limit 2000 --valid-size 500 --test-limit 500 --log-format json",
        ));
    let line = text(&dry.stdout).trim().to_string();
    let ran = run(Command::new("bash").arg("-c").arg(&line));
    let stderr = text(&ran.stderr);
    assert!(ran.status.success(), "{line}: {stderr}");
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(events.iter().any(|e| e["message"] == "test"), "{stderr}");
    assert!(
        tmp.path()
            .join("sweep/mlp-h30x10-lr0.001-b32-e1-s5/test.json")
            .is_file()
    );
}

/// A Slurm cluster for a test: `scripts/cluster/local-slurm up`, which reuses a running one
/// (`SLURM_CONF` in the environment, or the default configuration) or starts its own in the
/// test's directory; that one is stopped when the test ends.
struct Slurm {
    dir: tempfile::TempDir,
    conf: Option<String>,
}

impl Slurm {
    /// The cluster, or `None` (said in the test output) where none can start and
    /// `TRAINER_REQUIRE_SLURM` is not set.
    fn up() -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let out = run(Command::new(root().join("scripts/cluster/local-slurm"))
            .arg("up")
            .env("TRAINER_SLURM_DIR", dir.path()));
        let stderr = text(&out.stderr);
        if !out.status.success() {
            let why = stderr.lines().last().unwrap_or_default().to_string();
            assert!(
                std::env::var("TRAINER_REQUIRE_SLURM").as_deref() != Ok("1"),
                "TRAINER_REQUIRE_SLURM=1 but Slurm did not start: {stderr}"
            );
            crate::support::skipped_unless(
                &format!("no Slurm cluster ({why})"),
                "TRAINER_REQUIRE_SLURM",
            );
            return None;
        }
        let conf = text(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("export SLURM_CONF=").map(str::to_string));
        eprintln!("{stderr}");
        Some(Self { dir, conf })
    }

    /// A Slurm command for this cluster.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        if let Some(conf) = &self.conf {
            cmd.env("SLURM_CONF", conf);
        }
        cmd
    }

    /// `sbatch` of `sweep.sbatch` as a three-task array of one CPU each, in `chdir`, the
    /// cluster tests' grid through the environment; returns the job id.
    fn submit_sweep(&self, sweep_dir: &Path, chdir: &Path, wait: bool) -> String {
        let mut sbatch = self.command("sbatch");
        sbatch
            .args(["--parsable", "--array=0-2", "--cpus-per-task=1"])
            .arg(format!("--chdir={}", chdir.display()))
            .args(wait.then_some("--wait"))
            .arg(root().join("scripts/cluster/sweep.sbatch"))
            .env("TRAINER", env!("CARGO_BIN_EXE_trainer"))
            .env("SWEEP_DIR", sweep_dir)
            .env("DATA_DIR", data_dir())
            .env("SWEEP_GRID", CLUSTER_GRID)
            .env("SWEEP_FLAGS", CLUSTER_FLAGS);
        let out = run(&mut sbatch);
        assert!(
            out.status.success(),
            "sbatch: {}{}",
            text(&out.stderr),
            task_logs(chdir)
        );
        let id = text(&out.stdout);
        id.trim().split(';').next().unwrap().to_string()
    }

    /// Waits until the job `id` has left the queue.
    fn wait_job(&self, id: &str) {
        let start = Instant::now();
        loop {
            let out = run(self.command("squeue").args(["-h", "-j", id]));
            if text(&out.stdout).trim().is_empty() {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "job {id} still queued"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        let _ = Command::new(root().join("scripts/cluster/local-slurm"))
            .arg("down")
            .env("TRAINER_SLURM_DIR", self.dir.path())
            .output();
    }
}

/// The array tasks' logs in `dir`, for messages.
fn task_logs(dir: &Path) -> String {
    let mut logs = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("trainer-sweep-") {
            let log = std::fs::read_to_string(entry.path()).unwrap_or_default();
            logs.push_str(&format!("\n--- {name}\n{log}"));
        }
    }
    logs
}

/// `sbatch scripts/cluster/sweep.sbatch` on a real (one-node) Slurm cluster: a three-task
/// array makes one process's table, each point one claim; with the task holding a point
/// cancelled (`scancel`: SIGTERM) after the point's first checkpoint, the point is resumed
/// under a second claim and the table is still the same.
#[test]
fn the_slurm_script_runs_a_sweep_on_a_real_cluster() {
    let Some(slurm) = Slurm::up() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let reference = cluster_reference(&tmp.path().join("reference"));

    let (straight, logs) = (tmp.path().join("straight"), tmp.path().join("logs"));
    std::fs::create_dir_all(&logs).unwrap();
    slurm.submit_sweep(&straight, &logs, true);
    assert_eq!(table(&straight), reference, "{}", task_logs(&logs));
    for label in CLUSTER_LABELS {
        assert_eq!(generations(&straight, label), ["000001"], "{label}");
        assert_eq!(starts(&straight, label), 1, "{label}");
    }

    let (cancelled, logs) = (tmp.path().join("cancelled"), tmp.path().join("logs2"));
    std::fs::create_dir_all(&logs).unwrap();
    let job = slurm.submit_sweep(&cancelled, &logs, false);
    let mut first = None;
    wait_for("a point's first checkpoint", || {
        first = CLUSTER_LABELS
            .iter()
            .find(|l| cancelled.join(l).join("checkpoint.ckpt").exists());
        first.is_some()
    });
    let label = first.unwrap();
    let owner: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            cancelled
                .join(".claims")
                .join(label)
                .join("000001/owner.json"),
        )
        .unwrap(),
    )
    .unwrap();
    // Held still until Slurm's SIGCONT and SIGTERM arrive, so that the point is cancelled
    // mid-way however fast it trains.
    let pid = owner["pid"].to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let worker = owner["worker"].as_str().unwrap();
    let task = worker
        .strip_prefix("slurm-")
        .and_then(|w| w.split('@').next())
        .unwrap_or_else(|| panic!("not a Slurm task: {worker}"));
    assert!(task.starts_with(&format!("{job}_")), "{task} of job {job}");
    let cancel = run(slurm.command("scancel").arg(task));
    assert!(cancel.status.success(), "{}", text(&cancel.stderr));
    slurm.wait_job(&job);
    let logs = task_logs(&logs);
    assert_eq!(table(&cancelled), reference, "{logs}");
    assert_eq!(
        generations(&cancelled, label),
        ["000001", "000002"],
        "{logs}"
    );
    assert_eq!(starts(&cancelled, label), 2, "{logs}");
    assert!(
        logs.contains("interrupted; run the same `trainer sweep"),
        "{logs}"
    );
}

/// The Kubernetes Job's container command, read from the manifest and run as written by two
/// local "pods" at once (the volume mapped to a temporary directory, the image's paths to the
/// checkout, `trainer` on PATH), makes one process's table; and the Dockerfile builds the
/// image that command needs (`scripts/check_cluster.py`: its COPY sources exist, what the
/// sources include is copied, what the command uses is installed). A Dockerfile missing
/// what the pods run is refused.
#[test]
fn the_kubernetes_jobs_command_runs_as_two_pods() {
    let Some(python) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let manifest = root().join("scripts/cluster/sweep-job.yaml");
    let dockerfile = root().join("scripts/cluster/Dockerfile");
    let line = sbatch_line(&tmp.path().join("unused"));
    let check = |dockerfile: &Path, print: bool| {
        let mut cmd = Command::new(&python);
        cmd.arg(root().join("scripts/check_cluster.py"))
            .arg(&manifest)
            .arg("--slurm-command")
            .arg(&line)
            .arg("--dockerfile")
            .arg(dockerfile)
            .arg("--context")
            .arg(root());
        if print {
            cmd.arg("--print-pod");
        }
        run(&mut cmd)
    };
    let checked = check(&dockerfile, false);
    assert!(
        checked.status.success(),
        "{}{}",
        text(&checked.stdout),
        text(&checked.stderr)
    );
    let broken = tmp.path().join("Dockerfile");
    let without_script: String = std::fs::read_to_string(&dockerfile)
        .unwrap()
        .lines()
        .filter(|l| !l.contains("fetch_mnist.py"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&broken, without_script).unwrap();
    let refused = check(&broken, false);
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused.stderr).contains("/opt/trainer/scripts/fetch_mnist.py"));

    let pod: serde_json::Value = serde_json::from_slice(&check(&dockerfile, true).stdout).unwrap();
    let shared = tmp.path().join("shared");
    let mount = pod["mounts"][0].as_str().unwrap();
    let command: Vec<String> = pod["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c.as_str()
                .unwrap()
                .replace(&format!("{mount}/"), &format!("{}/", shared.display()))
                .replace("/opt/trainer/", &format!("{}/", root().display()))
        })
        .collect();
    // MNIST already on the volume, as the first pod that needs it leaves it.
    let mnist = shared.join("mnist");
    std::fs::create_dir_all(&mnist).unwrap();
    for entry in std::fs::read_dir(data_dir()).unwrap().flatten() {
        std::fs::copy(entry.path(), mnist.join(entry.file_name())).unwrap();
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_trainer"));
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let pods: Vec<Child> = (0..2)
        .map(|index| {
            let mut cmd = Command::new(&command[0]);
            cmd.args(&command[1..])
                .current_dir(tmp.path())
                .env("PATH", &path);
            for (name, value) in pod["env"].as_object().unwrap() {
                cmd.env(name, value.as_str().unwrap());
            }
            cmd.env("SWEEP_GRID", CLUSTER_GRID)
                .env("SWEEP_FLAGS", CLUSTER_FLAGS)
                .env("JOB_COMPLETION_INDEX", index.to_string());
            spawn(cmd)
        })
        .collect();
    let logs: Vec<String> = pods.into_iter().map(finish).collect();
    let out = shared.join("sweeps/lr-batch");
    assert_eq!(
        table(&out),
        cluster_reference(&tmp.path().join("reference"))
    );
    for label in CLUSTER_LABELS {
        assert_eq!(generations(&out, label), ["000001"], "{label}");
    }
    let workers: String = logs.concat();
    assert!(
        workers.contains("k8s-0@") && workers.contains("k8s-1@"),
        "{workers}"
    );
}
