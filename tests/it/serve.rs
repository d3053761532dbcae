//! `trainer serve` seen from outside: the binary serving a temporary directory of runs and
//! sweeps, spoken to over plain HTTP/1.1 on loopback (the page's own requests: the listing,
//! a run's history, its live events), while real runs train and resume beside it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, SystemTime};

use crate::support::{data_dir, run, text, trainer};

/// A `trainer serve` process and the address it printed.
pub struct Server {
    child: Child,
    addr: String,
}

impl Server {
    /// Starts `trainer serve --port 0 ARGS` and waits for its `serving http://ADDR/` line.
    pub fn start(args: &[&str]) -> Server {
        let mut all = vec!["serve", "--port", "0"];
        all.extend_from_slice(args);
        let mut child = trainer(&all)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("trainer serve starts");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout is piped");
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let Some(addr) = line
            .trim()
            .strip_prefix("serving http://")
            .and_then(|a| a.strip_suffix('/'))
        else {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "no address printed: {line:?}; stderr: {}",
                text(&out.stderr)
            );
        };
        Server {
            addr: addr.to_string(),
            child,
        }
    }

    /// Where it listens (`127.0.0.1:PORT`).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `GET path` with a loopback Host; the status and body.
    fn get(&self, path: &str) -> (u16, String) {
        self.request(&format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        ))
    }

    /// Sends a raw request; the status and (de-chunked) body of the answer.
    fn request(&self, raw: &str) -> (u16, String) {
        self.exchange(raw, &[])
    }

    /// `POST path` with `body`; the status and body of the answer.
    fn post(&self, path: &str, body: &[u8]) -> (u16, String) {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: image/png\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        self.exchange(&head, body)
    }

    /// Sends `head` then `body` on a new connection; the status and (de-chunked) body of the
    /// answer.
    fn exchange(&self, head: &str, body: &[u8]) -> (u16, String) {
        let mut stream = TcpStream::connect(&self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.write_all(head.as_bytes()).unwrap();
        // A refused body may be cut off by the server before it is all sent (and the
        // connection reset after its answer): what arrived is the answer.
        let _ = stream.write_all(body);
        let mut answer = Vec::new();
        let read = stream.read_to_end(&mut answer);
        if body.is_empty() {
            read.unwrap();
        }
        let answer = text(&answer);
        let (head, rest) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        (status, if chunked { dechunk(rest) } else { rest.into() })
    }

    /// `GET path` as JSON, which must be answered 200.
    fn json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    /// Opens the live events of `run` from epoch `from` (0-based).
    fn events(&self, run: &str, from: usize) -> Events {
        let mut stream = TcpStream::connect(&self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        write!(
            stream,
            "GET /api/events?run={run}&from={from} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut reader = BufReader::new(stream);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.contains(" 200 "), "events of {run}: {status}");
        // The headers, to the blank line.
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
        }
        Events { reader }
    }

    /// Stops the server as Ctrl-C does; its exit status and stdout's rest.
    fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let kill = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap();
        assert!(kill.success());
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A body sent in chunks, joined.
pub fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

/// A stream of server-sent events (chunked: the size lines are skipped as non-fields).
struct Events {
    reader: BufReader<TcpStream>,
}

impl Events {
    /// The next event's name and data (keep-alive comments skipped).
    fn next(&mut self) -> (String, String) {
        let (mut name, mut data) = (String::new(), String::new());
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).unwrap();
            assert!(n > 0, "the event stream ended");
            let line = line.trim_end();
            if let Some(v) = line.strip_prefix("event:") {
                name = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim());
            } else if line.is_empty() && !data.is_empty() {
                return (name, data);
            }
        }
    }
}

/// Every file under `dir` with its length and modification time (to show nothing changed).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, SystemTime)> {
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                todo.push(entry.path());
            }
            files.insert(entry.path(), (meta.len(), meta.modified().unwrap()));
        }
    }
    files
}

/// A run of the listing, by id.
fn listed<'a>(listing: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    listing["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("{id} is not listed: {listing}"))
}

/// A run started while the server watches shows each epoch live, in order, while it trains;
/// a `--resume` started while its events are watched is not refused as busy, and its new
/// epoch arrives on the same stream.
#[test]
fn a_training_run_is_watched_live_and_resumes_while_watched() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    let server = Server::start(&["--runs", runs.to_str().unwrap()]);
    let listing = server.json("/api/runs");
    assert_eq!(listing["runs"].as_array().unwrap().len(), 0, "{listing}");

    let live = runs.join("live");
    let data = data_dir();
    let mut child = train_live(&live);

    // The run appears in the listing once its config.json is written.
    let started = std::time::Instant::now();
    while server.json("/api/runs")["runs"]
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the run never appeared"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut events = server.events("0:live", 0);
    watch_while_training(&mut events, &mut child, 6);
    let status = child.wait().unwrap();
    assert!(status.success());

    // The stream goes on: the run is finished, then resumed while watched.
    let finished = loop {
        let (name, data) = events.next();
        let value: serde_json::Value = serde_json::from_str(&data).unwrap();
        if name == "state" && value["state"] == "finished" {
            break value;
        }
    };
    assert_eq!(finished["epochs_done"], 6);
    assert!(
        finished["test_accuracy"].as_f64().unwrap() > 0.8,
        "{finished}"
    );
    let resumed = run(trainer(&[
        "train",
        "--resume",
        live.to_str().unwrap(),
        "--epochs",
        "7",
        "--quiet",
    ])
    .env("TRAINER_DATA_DIR", &data));
    assert!(
        resumed.status.success(),
        "a resume while watched: {}",
        text(&resumed.stderr)
    );
    let seventh = loop {
        let (name, data) = events.next();
        if name == "epoch" {
            break serde_json::from_str::<serde_json::Value>(&data).unwrap();
        }
    };
    assert_eq!(seventh["epoch"], 7);
    let listing = server.json("/api/runs");
    let run = listed(&listing, "0:live");
    assert_eq!(run["state"], "finished");
    assert_eq!(run["epochs_done"], 7);
    let history = server.json("/api/history?run=0:live");
    assert_eq!(history.as_array().unwrap().len(), 7);
    drop(events);
    let status = server.stop();
    assert!(
        status.success(),
        "Ctrl-C stops the server cleanly: {status}"
    );
}

/// Starts a run in `dir` slow enough to be watched epoch by epoch (six epochs of all the
/// training images, batch 16, on flex with burn's generic step: about a second an epoch; the
/// fused CPU step takes a fifth of that), in the background.
pub fn train_live(dir: &Path) -> Child {
    trainer(&[
        "train",
        "--out",
        dir.to_str().unwrap(),
        "--epochs",
        "6",
        "--batch-size",
        "16",
        "--backend",
        "flex",
        "--step",
        "generic",
        "--test-limit",
        "2000",
        "--quiet",
    ])
    .env("TRAINER_DATA_DIR", data_dir())
    .stdout(Stdio::null())
    .spawn()
    .unwrap()
}

/// Reads `epochs` epoch events of a run that `child` trains: they come in order, the run is
/// shown training, and at least two arrive while it still trains.
fn watch_while_training(events: &mut Events, child: &mut Child, epochs: u64) {
    let mut seen_training = false;
    let mut seen = Vec::new();
    let mut live_epochs = 0;
    while seen.len() < epochs as usize {
        let (name, data) = events.next();
        let value: serde_json::Value = serde_json::from_str(&data).unwrap();
        match name.as_str() {
            "epoch" => {
                seen.push(value["epoch"].as_u64().unwrap());
                if child.try_wait().unwrap().is_none() {
                    live_epochs += 1;
                }
            }
            "state" => seen_training |= value["state"] == "training",
            other => panic!("unexpected event {other}: {data}"),
        }
    }
    assert_eq!(seen, (1..=epochs).collect::<Vec<_>>());
    assert!(seen_training, "the run was never shown training");
    assert!(
        live_epochs >= 2,
        "only {live_epochs} epochs arrived while the run trained"
    );
}

/// A sweep and its runs are listed; the server writes nothing under its directories, locks
/// nothing, and refuses what leaves them, other hosts and requests without its token.
#[test]
fn sweeps_are_listed_and_the_server_refuses_what_it_must() {
    let tmp = tempfile::tempdir().unwrap();
    let sweeps = tmp.path().join("sweeps");
    let sweep = sweeps.join("widths");
    let out = run(trainer(&[
        "sweep",
        "--out",
        sweep.to_str().unwrap(),
        "--hidden",
        "16:32",
        "--epochs",
        "1",
        "--quiet",
        "--",
        "--train-limit",
        "1000",
        "--test-limit",
        "500",
        "--backend",
        "flex",
    ])
    .env("TRAINER_DATA_DIR", data_dir()));
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A run outside the directory served, and a link to it from inside.
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let point = std::fs::read_dir(&sweep)
        .unwrap()
        .flatten()
        .find(|e| e.path().join("config.json").is_file())
        .unwrap()
        .path();
    std::fs::copy(point.join("config.json"), outside.join("config.json")).unwrap();
    std::os::unix::fs::symlink(&outside, sweeps.join("escape")).unwrap();
    let before = snapshot(&sweeps);

    let server = Server::start(&["--runs", sweeps.to_str().unwrap(), "--token", "s3cret"]);
    let (status, body) = server.get("/api/runs");
    assert_eq!(status, 401, "no token: {body}");
    assert!(body.contains("token"), "{body}");
    assert_eq!(server.get("/?token=wrong").0, 401);
    let (status, page) = server.get("/?token=s3cret");
    assert_eq!(status, 200);
    assert!(page.contains("<title>trainer</title>"), "{page}");
    let (status, _) = server.request(&format!(
        "GET /api/runs HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer s3cret\r\nConnection: close\r\n\r\n",
        server.addr
    ));
    assert_eq!(status, 200, "the token as a bearer header");

    let listing = server.json("/api/runs?token=s3cret");
    let listed_sweeps = listing["sweeps"].as_array().unwrap();
    assert_eq!(listed_sweeps.len(), 1, "{listing}");
    assert_eq!(listed_sweeps[0]["id"], "0:widths");
    let ids: Vec<&str> = listed_sweeps[0]["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{listing}");
    for id in &ids {
        let r = listed(&listing, id);
        assert_eq!(r["state"], "finished", "{r}");
        assert_eq!(r["sweep"], "0:widths");
        assert_eq!(r["epochs_done"], 1);
        assert!(r["test_accuracy"].as_f64().unwrap() > 0.3, "{r}");
        let h = server.json(&format!("/api/history?run={id}&token=s3cret"));
        assert_eq!(h.as_array().unwrap().len(), 1);
    }
    assert_eq!(
        listing["runs"].as_array().unwrap().len(),
        2,
        "the link out is not listed: {listing}"
    );

    // Ids that leave the directory, or name no run.
    for (id, want) in [
        ("0:../outside", 400),
        ("0:widths/../../outside", 400),
        ("0:%2Fetc", 400),
        ("0:escape", 404),
        ("0:widths", 404),
        ("1:widths", 404),
        ("nonsense", 400),
    ] {
        let (status, body) = server.get(&format!("/api/history?run={id}&token=s3cret"));
        assert_eq!(status, want, "{id}: {body}");
        let (status, _) = server.get(&format!("/api/events?run={id}&token=s3cret"));
        assert_eq!(status, want, "events of {id}");
    }
    classify_answers_as_predict(&server, tmp.path(), &point);

    // Another host name (a page elsewhere, through DNS rebinding) is refused.
    let (status, _) = server.request(
        "GET /api/runs?token=s3cret HTTP/1.1\r\nHost: evil.example:80\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 403);
    // Read-only: the server wrote, created and locked nothing.
    drop(server);
    assert_eq!(snapshot(&sweeps), before);
}

/// The drawing pad's classifier answers as `trainer predict` does for the same picture
/// (pictures of real test digits, with the sweep point's own model), and refuses oversized
/// bodies, bodies that are no picture and runs outside the directory.
fn classify_answers_as_predict(server: &Server, tmp: &Path, point: &Path) {
    let mnist = crate::support::mnist();
    let model = point.join("model.model");
    let model_id = format!("0:widths/{}", point.file_name().unwrap().to_str().unwrap());
    for i in 0..5 {
        let png = tmp.join(format!("digit-{i}.png"));
        let pixels = mnist.test.image(i);
        image::GrayImage::from_fn(84, 84, |x, y| {
            image::Luma([pixels[(y / 3 * 28 + x / 3) as usize]])
        })
        .save(&png)
        .unwrap();
        let body = std::fs::read(&png).unwrap();
        let (status, answer) =
            server.post(&format!("/api/classify?run={model_id}&token=s3cret"), &body);
        assert_eq!(status, 200, "{answer}");
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["ran"], "server");
        assert_eq!(answer["pixels"].as_array().unwrap().len(), 784);
        let out = run(trainer(&["predict", "--json", "--top", "10", "--model"])
            .arg(&model)
            .arg(&png));
        assert!(out.status.success(), "{}", text(&out.stderr));
        let predicted: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for top in predicted["top"].as_array().unwrap() {
            let class = top["digit"].as_u64().unwrap() as usize;
            let want = top["probability"].as_f64().unwrap();
            let got = answer["probabilities"][class].as_f64().unwrap();
            assert!(
                (got - want).abs() <= 1e-6,
                "digit {i}, class {class}: {got} vs {want}"
            );
        }
        std::fs::remove_file(&png).unwrap();
    }
    // Bounded bodies; a body that is no picture is one line of error.
    let (status, _) = server.post(
        &format!("/api/classify?run={model_id}&token=s3cret"),
        &vec![0u8; (1 << 20) + 1],
    );
    assert_eq!(status, 413);
    let (status, body) = server.post(
        &format!("/api/classify?run={model_id}&token=s3cret"),
        b"not a picture",
    );
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("not a readable image"), "{body}");
    let (status, _) = server.post("/api/classify?run=0:../outside&token=s3cret", b"x");
    assert_eq!(status, 400);
}

/// An address that cannot be listened on is one line naming the flags, and exit 1.
#[test]
fn a_bad_address_is_one_line() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port().to_string();
    for args in [
        vec!["serve", "--port", port.as_str()],
        vec!["serve", "--host", "192.0.2.1", "--port", "0"],
    ] {
        let out = run(&mut trainer(&args));
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("error: --host "), "{stderr}");
        assert!(stderr.contains("cannot listen there"), "{stderr}");
    }
    let out = run(&mut trainer(&["serve", "--host", "localhost"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--host"),
        "{}",
        text(&out.stderr)
    );
}

/// `scripts/bench_serve.py`, run as the README runs it (smaller): it prints the listing's
/// time, the page's load in Chromium (where installed), classification latency under
/// concurrent clients and the server's memory.
#[test]
fn the_serve_benchmark_prints_its_figures() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_serve.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg("--trainer")
        .arg(crate::support::trainer_binary())
        .args([
            "--runs",
            "3",
            "--clients",
            "4",
            "--requests",
            "5",
            "--loads",
            "2",
        ])
        .env("TRAINER_DATA_DIR", data_dir())
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    for figure in [
        "GET /api/runs, 3 runs: first ",
        "POST /api/classify, 4 clients x 5 requests: p50 ",
        "server memory: peak ",
        "mistakes: the model's test pass ",
        "live epochs: 5 events, delay from the history line median ",
    ] {
        assert!(stdout.contains(figure), "no {figure:?} in {stdout}");
    }
    if crate::support::required("TRAINER_REQUIRE_BROWSER") {
        assert!(
            stdout.contains("page load in Chromium, 3 runs: first "),
            "{stdout}"
        );
    }
}
