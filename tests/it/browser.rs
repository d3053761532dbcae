//! `trainer serve`'s page in a real browser: headless Chromium driven over WebDriver
//! (chromedriver, on loopback), its WebGPU on SwiftShader — Dawn and Tint, a WebGPU
//! implementation independent of wgpu, naga and lavapipe. Without Chromium and chromedriver
//! the tests say they are skipped, unless `TRAINER_REQUIRE_BROWSER=1` (CI sets it).
//!
//! Screenshots of each view go where `$TRAINER_SCREENSHOTS` says, when it is set.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::serve::Server;
use crate::support::{data_dir, missing, run, runs, text, trainer};

/// The flags that give headless Chromium a WebGPU adapter on the CPU (SwiftShader).
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--enable-unsafe-webgpu",
    "--enable-features=Vulkan",
    "--use-vulkan=swiftshader",
    "--use-webgpu-adapter=swiftshader",
    "--window-size=1300,1500",
];

/// The WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one browser session in it.
pub struct Browser {
    driver: Child,
    addr: String,
    session: String,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session, or says the test is skipped (and
    /// fails it under `TRAINER_REQUIRE_BROWSER=1`) when they are not installed.
    pub fn start() -> Option<Browser> {
        let binary = std::env::var("TRAINER_CHROMIUM").unwrap_or_else(|_| "chromium".into());
        if !runs(&binary, "--version") || !runs("chromedriver", "--version") {
            missing(
                "no chromium and chromedriver (Debian: apt-get install chromium chromium-driver)",
                "TRAINER_REQUIRE_BROWSER",
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut browser = Browser {
            driver,
            addr: format!("127.0.0.1:{port}"),
            session: String::new(),
        };
        let started = Instant::now();
        while browser.call("GET", "/status", None).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver never answered"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let path = which(&binary);
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": path, "args": CHROMIUM_FLAGS}}}});
        let session = browser.call("POST", "/session", Some(caps)).unwrap();
        browser.session = session["sessionId"].as_str().unwrap().to_string();
        Some(browser)
    }

    /// One WebDriver command; its `value`, or the error it answered.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let mut stream = TcpStream::connect(&self.addr).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(180)))
            .unwrap();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .map_err(|e| e.to_string())?;
        let (head, rest) = read_answer(&mut stream)?;
        let value: Value = serde_json::from_str(&rest).map_err(|e| format!("{e}: {rest}"))?;
        match head.split_whitespace().nth(1) {
            Some("200") => Ok(value["value"].clone()),
            _ => Err(value["value"].to_string()),
        }
    }

    /// A command of this session.
    fn session(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    /// Opens `url`.
    pub fn open(&self, url: &str) {
        self.session("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` in the page (its `return` is the value).
    pub fn exec(&self, script: &str) -> Value {
        self.session(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// Runs `script` in the page and waits for its promise.
    pub fn exec_async(&self, script: &str) -> Value {
        let wrapped = format!(
            "const done = arguments[0]; (async () => {{ {script} }})().then(done, e => done({{error: String(e)}}));"
        );
        self.session(
            "POST",
            "/execute/async",
            Some(json!({"script": wrapped, "args": []})),
        )
    }

    /// Waits until `script` returns something truthy (within `limit`).
    pub fn wait_for(&self, script: &str, limit: Duration, what: &str) -> Value {
        let started = Instant::now();
        loop {
            let value = self.exec(script);
            if !(value.is_null() || value == false || value == 0) {
                return value;
            }
            assert!(started.elapsed() < limit, "waited {limit:?} for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The element `css` selects.
    pub fn element(&self, css: &str) -> String {
        let found = self.session(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        found[ELEMENT].as_str().unwrap().to_string()
    }

    /// Pointer strokes on the element `css`, each a list of points relative to its top left
    /// corner, drawn with a pen.
    pub fn strokes(&self, css: &str, size: (f64, f64), strokes: &[Vec<(f64, f64)>]) {
        let element = self.element(css);
        let at = |(x, y): (f64, f64)| {
            json!({"type": "pointerMove", "duration": 0, "origin": {ELEMENT: element},
                "x": (x - size.0 / 2.0).round() as i64, "y": (y - size.1 / 2.0).round() as i64})
        };
        let mut actions = Vec::new();
        for stroke in strokes {
            actions.push(at(stroke[0]));
            actions.push(json!({"type": "pointerDown", "button": 0}));
            for &point in &stroke[1..] {
                actions.push(at(point));
            }
            actions.push(json!({"type": "pointerUp", "button": 0}));
        }
        let body = json!({"actions": [{"type": "pointer", "id": "pen",
            "parameters": {"pointerType": "pen"}, "actions": actions}]});
        self.session("POST", "/actions", Some(body));
    }

    /// A screenshot of the window, saved as `$TRAINER_SCREENSHOTS/name` when that is set.
    pub fn screenshot(&self, name: &str) {
        let Some(dir) = std::env::var_os("TRAINER_SCREENSHOTS") else {
            return;
        };
        let png = base64(self.session("GET", "/screenshot", None).as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG"), "a screenshot is a PNG");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(PathBuf::from(dir).join(name), png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Reads one HTTP answer (chromedriver may keep the connection open): the head, and the
/// body by its length or its chunks.
fn read_answer(stream: &mut TcpStream) -> Result<(String, String), String> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 65536];
    let done = |bytes: &[u8]| -> Option<usize> {
        let text = String::from_utf8_lossy(bytes);
        let (head, body) = text.split_once("\r\n\r\n")?;
        let head = head.to_ascii_lowercase();
        if head.contains("transfer-encoding: chunked") {
            return body.ends_with("0\r\n\r\n").then_some(0);
        }
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())?;
        (body.len() >= length).then_some(length)
    };
    while done(&bytes).is_none() {
        let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&buf[..n]);
    }
    let answer = text(&bytes);
    let (head, rest) = answer.split_once("\r\n\r\n").ok_or("no HTTP answer")?;
    let rest = if head.to_ascii_lowercase().contains("chunked") {
        crate::serve::dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok((head.to_string(), rest))
}

/// The full path of a program on PATH (chromedriver wants one).
fn which(program: &str) -> String {
    if program.contains('/') {
        return program.to_string();
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .map_or_else(|| program.to_string(), |p| p.display().to_string())
}

/// Standard base64 decoded (what WebDriver's screenshots and canvases are).
pub fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let sextets: Vec<u8> = text.bytes().filter_map(value).collect();
    sextets
        .chunks(4)
        .flat_map(|q| {
            let n = q
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &s)| n | u32::from(s) << (18 - 6 * i));
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            bytes.into_iter().take(q.len() - 1)
        })
        .collect()
}

/// A script true when the loss chart shows `run`'s training curve with `test` epochs
/// (`">= 2"`, `"=== 4"`).
fn epochs_shown(run: &str, test: &str) -> String {
    format!(
        "const p = document.querySelector('#loss path[data-run=\"{run}\"]'); return p !== null && +p.getAttribute('data-points') {test};"
    )
}

/// Trains a small run into `dir` (`epochs` over the first `images` training images).
fn train(dir: &Path, epochs: &str, images: &str) {
    let out = run(trainer(&[
        "train",
        "--out",
        dir.to_str().unwrap(),
        "--epochs",
        epochs,
        "--train-limit",
        images,
        "--test-limit",
        "2000",
        "--backend",
        "flex",
        "--quiet",
    ])
    .env("TRAINER_DATA_DIR", data_dir()));
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Trains a sweep of two learning rates into `dir`.
fn sweep_into(dir: &Path) {
    let flags =
        "--lr 1e-3,3e-3 --epochs 2 --quiet -- --train-limit 3000 --test-limit 1000 --backend flex";
    let mut args = vec!["sweep", "--out", dir.to_str().unwrap()];
    args.extend(flags.split(' '));
    let sweep = run(trainer(&args).env("TRAINER_DATA_DIR", data_dir()));
    assert!(sweep.status.success(), "{}", text(&sweep.stderr));
}

/// The page lists a directory's runs and a sweep; a run started while it is open shows its
/// second epoch without a reload, and a `--resume` started while the page watches it is not
/// refused as busy; its new epoch reaches the page too.
#[test]
fn the_page_watches_a_run_live_in_a_browser() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (runs, sweeps) = (tmp.path().join("runs"), tmp.path().join("sweeps"));
    train(&runs.join("earlier"), "2", "5000");
    sweep_into(&sweeps.join("lr"));
    let server = Server::start(&[
        "--runs",
        runs.to_str().unwrap(),
        "--runs",
        sweeps.to_str().unwrap(),
    ]);
    browser.open(&format!("http://{}/", server.addr()));
    browser.wait_for(
        "return state.listing && state.listing.runs.length === 3",
        Duration::from_secs(30),
        "the runs listed",
    );
    browser.exec("window.notReloaded = true; return 1");
    let sweep_rows = browser.exec("return document.querySelectorAll('.sweep tbody tr').length");
    assert_eq!(sweep_rows, 2, "the sweep's table has its two points");

    let live = runs.join("live");
    let mut child = crate::serve::train_live(&live);
    let tick = "const box = document.querySelector('input[data-run=\"0:live\"]'); if (!box) return false; if (!box.checked) box.click(); return true;";
    browser.wait_for(tick, Duration::from_secs(60), "the new run in the table");
    browser.wait_for(
        &epochs_shown("0:live", ">= 2"),
        Duration::from_secs(120),
        "two epochs on the page",
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run still trains with two epochs shown"
    );
    browser.screenshot("serve-runs.png");
    assert!(child.wait().unwrap().success());
    browser.wait_for(
        &epochs_shown("0:live", "=== 6"),
        Duration::from_secs(30),
        "six epochs",
    );

    let resumed = run(trainer(&[
        "train",
        "--resume",
        live.to_str().unwrap(),
        "--epochs",
        "7",
        "--quiet",
    ])
    .env("TRAINER_DATA_DIR", data_dir()));
    assert!(
        resumed.status.success(),
        "a resume while the page watches: {}",
        text(&resumed.stderr)
    );
    browser.wait_for(
        &epochs_shown("0:live", "=== 7"),
        Duration::from_secs(30),
        "the resumed epoch on the page",
    );
    browser.wait_for("const r = state.listing.runs.find(r => r.id === '0:live'); return r && r.state === 'finished' && r.epochs_done === 7;", Duration::from_secs(30), "the run finished in the table");
    assert_eq!(
        browser.exec("return window.notReloaded === true"),
        true,
        "the page was never reloaded"
    );
    browser.exec("document.querySelector('.sweep').scrollIntoView(); return 1");
    browser.screenshot("serve-sweep.png");
}

/// Strokes that follow the ink of a 28 × 28 picture on a 280 × 280 pad: one stroke per run
/// of ink along each row.
fn strokes_over(pixels: &[u8]) -> Vec<Vec<(f64, f64)>> {
    let mut strokes = Vec::new();
    for y in 0..28 {
        let mut x = 0;
        while x < 28 {
            if pixels[y * 28 + x] < 128 {
                x += 1;
                continue;
            }
            let start = x;
            while x < 28 && pixels[y * 28 + x] >= 128 {
                x += 1;
            }
            let at = |x: usize| (x as f64 * 10.0 + 5.0, y as f64 * 10.0 + 5.0);
            strokes.push(vec![at(start), at(x - 1)]);
        }
    }
    strokes
}

/// Drawn on the pad, a real test digit's strokes are classified in the browser on WebGPU by
/// the project's own kernels, as the server classifies them (1e-5) and as `trainer predict`
/// classifies the pad's own bitmap; a confusion cell opens pictures of that cell only.
#[test]
fn drawing_and_mistakes_in_a_browser_on_webgpu() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let model_run = runs.join("model");
    train(&model_run, "3", "20000");
    let server = Server::start(&["--runs", runs.to_str().unwrap()]);
    browser.open(&format!("http://{}/", server.addr()));
    browser.wait_for(
        "return document.getElementById('model').value === '0:model'",
        Duration::from_secs(30),
        "the model offered for drawing",
    );
    let mnist = crate::support::mnist();
    let mut agreed = 0;
    for i in 0..3 {
        let strokes = strokes_over(mnist.test.image(i));
        browser.exec("clearPad(); window.trainerLast = null; return 1");
        browser.strokes("#pad", (280.0, 280.0), &strokes);
        let last = browser.exec_async("return await trainerSettled();");
        let (server_p, webgpu_p) = (&last["server"], &last["webgpu"]);
        assert!(webgpu_p.is_array(), "WebGPU did not run: {}", last["why"]);
        for (c, (s, w)) in server_p
            .as_array()
            .unwrap()
            .iter()
            .zip(webgpu_p.as_array().unwrap())
            .enumerate()
        {
            let (s, w) = (s.as_f64().unwrap(), w.as_f64().unwrap());
            assert!(
                (s - w).abs() <= 1e-5,
                "digit {i}, class {c}: server {s}, WebGPU {w}"
            );
        }
        let shown =
            browser.exec("return document.getElementById('ran').getAttribute('data-class')");
        let ran = browser.exec("return document.getElementById('ran').textContent");
        assert!(ran.as_str().unwrap().contains("WebGPU"), "{ran}");
        // The pad's own bitmap, as a PNG file, through `trainer predict`.
        let url = browser.exec("return document.getElementById('pad').toDataURL('image/png')");
        let png = tmp.path().join(format!("pad-{i}.png"));
        std::fs::write(
            &png,
            base64(url.as_str().unwrap().split(',').nth(1).unwrap()),
        )
        .unwrap();
        let out = run(trainer(&["predict", "--json", "--top", "10", "--model"])
            .arg(model_run.join("model.model"))
            .arg(&png));
        assert!(out.status.success(), "{}", text(&out.stderr));
        let predicted: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(predicted["class"], shown, "digit {i}: predict and the page");
        for top in predicted["top"].as_array().unwrap() {
            let c = top["digit"].as_u64().unwrap() as usize;
            let (want, got) = (
                top["probability"].as_f64().unwrap(),
                server_p[c].as_f64().unwrap(),
            );
            assert!(
                (want - got).abs() <= 1e-6,
                "digit {i}, class {c}: predict {want}, page {got}"
            );
        }
        agreed += usize::from(shown.as_str() == Some(mnist.test.labels()[i].to_string().as_str()));
        if i == 0 {
            browser.exec("document.getElementById('pad').scrollIntoView(); return 1");
            browser.screenshot("serve-draw.png");
        }
    }
    eprintln!("drawn digits classified as their labels: {agreed} of 3");
    webgpu_agrees_on_test_pictures(&browser, &mnist);
    mistakes_open_their_pictures(&browser, &model_run);
}

/// Test pictures posted as PNG files: on each, WebGPU's probabilities are the server's
/// (1e-5) and so is the class.
fn webgpu_agrees_on_test_pictures(browser: &Browser, mnist: &trainer::data::Data) {
    let count = 50;
    let pngs: Vec<String> = (0..count)
        .map(|i| {
            let pixels = mnist.test.image(100 + i);
            let mut png = Vec::new();
            image::GrayImage::from_raw(28, 28, pixels.to_vec())
                .unwrap()
                .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                .unwrap();
            png.iter().map(|b| format!("{b:02x}")).collect()
        })
        .collect();
    let script = format!(
        "const pngs = {}; let worst = 0, same = 0; \
         for (const hex of pngs) {{ \
           const bytes = new Uint8Array(hex.match(/../g).map(h => parseInt(h, 16))); \
           const r = await fetch(api('/api/classify', {{ run: '0:model' }}), {{ method: 'POST', body: bytes }}); \
           const a = await r.json(); const g = await gpuClassify('0:model', a.pixels); \
           a.probabilities.forEach((p, c) => {{ worst = Math.max(worst, Math.abs(p - g.probabilities[c])); }}); \
           const best = v => v.indexOf(Math.max(...v)); \
           if (best(a.probabilities) === best(g.probabilities)) same += 1; }} \
         return [worst, same];",
        serde_json::to_string(&pngs).unwrap()
    );
    let result = browser.exec_async(&script);
    let (worst, same) = (result[0].as_f64(), result[1].as_u64());
    assert!(
        worst.is_some_and(|w| w <= 1e-5),
        "WebGPU against the server: {result}"
    );
    assert_eq!(
        same,
        Some(count as u64),
        "the same class on every picture: {result}"
    );
    eprintln!("WebGPU against the server on {count} test pictures: largest difference {worst:?}");
}

/// The mistakes view of the run in `dir` shows its test result's confusion matrix, and the
/// largest off-diagonal cell opens pictures of that cell only.
fn mistakes_open_their_pictures(browser: &Browser, dir: &Path) {
    let shown = browser.exec_async(
        "document.getElementById('mistakes-run').value = '0:model'; await showMistakes(); \
         return [...document.querySelectorAll('#confusion tr')].slice(1).map(tr => [...tr.querySelectorAll('td')].map(td => +td.textContent));",
    );
    let test: Value =
        serde_json::from_slice(&std::fs::read(dir.join("test.json")).unwrap()).unwrap();
    assert_eq!(
        shown, test["confusion"]["counts"],
        "the run's own confusion matrix"
    );
    let counts = shown.as_array().unwrap();
    let (mut cell, mut most) = ((0, 0), 0);
    for (t, row) in counts.iter().enumerate() {
        for (p, n) in row.as_array().unwrap().iter().enumerate() {
            let n = n.as_u64().unwrap();
            if t != p && n > most {
                (cell, most) = ((t, p), n);
            }
        }
    }
    assert!(most > 0, "a model with no mistakes: {shown}");
    let (t, p) = cell;
    browser.exec(&format!(
        "document.querySelector('#confusion td[data-true=\"{t}\"][data-predicted=\"{p}\"]').click(); return 1"
    ));
    let figures = browser.wait_for(
        "const f = [...document.querySelectorAll('#pictures figure')]; return f.length && f.map(f => [+f.dataset.label, +f.dataset.predicted]);",
        Duration::from_secs(30),
        "the cell's pictures",
    );
    let figures = figures.as_array().unwrap();
    assert_eq!(figures.len() as u64, most.min(60));
    for f in figures {
        assert_eq!(f, &json!([t, p]), "a picture of another cell");
    }
    browser.exec("document.getElementById('confusion').scrollIntoView(); return 1");
    browser.screenshot("serve-mistakes.png");
}
