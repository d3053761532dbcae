#!/usr/bin/env python3
"""Measure `trainer serve`: the page's first load over many runs, classification latency
under concurrent clients, and the server's memory. Loopback only; nothing but Python's
standard library (and, for the page's load in a real browser, chromium and chromedriver).

Usage: bench_serve.py [--trainer PATH] [--runs N] [--clients C] [--requests R]
                      [--loads L] [--no-browser]

It trains one small run (30 epochs on 5,000 MNIST images), copies it into N run
directories, starts `trainer serve --port 0` on them and measures:
- GET /api/runs, the listing, on the server's first request and then warm (median of L);
- the page's first load in headless Chromium: from navigation until the runs table shows
  all N runs (the page records the moment), on a fresh server and then again (median of L);
- POST /api/classify of an MNIST test digit's PNG by C concurrent clients, R requests
  each: p50 and p99 latency and requests/s;
- the mistakes view: the model's pass over the test set (once), then one cell's pictures;
- the delay from a training run's epoch written (its history.jsonl's modification time)
  to that epoch's event reaching a client of /api/events (5 epochs, median and largest);
- the server's peak resident memory (VmHWM) at the end.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd, **kw):
    done = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)}: {done.stderr.strip()}")
    return done.stdout


def start_server(trainer, root):
    server = subprocess.Popen(
        [trainer, "serve", "--runs", root, "--port", "0", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = server.stdout.readline().strip()
    if not line.startswith("serving http://"):
        server.kill()
        sys.exit(f"error: trainer serve printed {line!r}: {server.stderr.read().strip()}")
    return server, line[len("serving "):].rstrip("/")


def timed_get(url):
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as r:
        body = r.read()
    return time.perf_counter() - t, body


def webdriver(port, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.load(r)["value"]


def page_loads(base, n_runs, loads):
    """Seconds from navigation to a runs table of n_runs rows, per load."""
    if not (shutil.which("chromedriver") and shutil.which("chromium")):
        print("page load: skipped (no chromium and chromedriver)")
        return []
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    driver = subprocess.Popen(["chromedriver", f"--port={port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                webdriver(port, "GET", "/status")
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.05)
        args = ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1300,1500"]
        session = webdriver(port, "POST", "/session", {"capabilities": {"alwaysMatch": {
            "goog:chromeOptions": {"binary": shutil.which("chromium"), "args": args}}}})
        sid = session["sessionId"]
        times = []
        for _ in range(loads):
            webdriver(port, "POST", f"/session/{sid}/url", {"url": base + "/"})
            script = ("return document.querySelectorAll('#runs tbody tr').length >= %d"
                      " && window.trainerFirstListing" % n_runs)
            for _ in range(600):
                at = webdriver(port, "POST", f"/session/{sid}/execute/sync",
                               {"script": script, "args": []})
                if at:
                    break
                time.sleep(0.05)
            else:
                sys.exit("error: the page never listed the runs")
            times.append(at / 1000)
        webdriver(port, "DELETE", f"/session/{sid}")
        return times
    finally:
        driver.kill()


def classify_load(base, run_id, png, clients, requests):
    latencies, errors = [], []
    lock = threading.Lock()
    url = f"{base}/api/classify?run={run_id}"

    def client():
        for _ in range(requests):
            req = urllib.request.Request(url, data=png, method="POST",
                                         headers={"Content-Type": "image/png"})
            t = time.perf_counter()
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    r.read()
                with lock:
                    latencies.append(time.perf_counter() - t)
            except urllib.error.URLError as e:
                with lock:
                    errors.append(str(e))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return latencies, errors, time.perf_counter() - t


def live_delays(trainer, base, root, epochs=5):
    """Seconds from each epoch's history line to its event at a watching client."""
    live = os.path.join(root, "live")
    child = subprocess.Popen([trainer, "train", "--out", live, "--epochs", str(epochs),
                              "--batch-size", "16", "--backend", "flex", "--quiet"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while not os.path.exists(os.path.join(live, "config.json")):
            if child.poll() is not None:
                sys.exit(f"error: the live run failed: {child.stderr.read().decode()}")
            time.sleep(0.02)
        delays = []
        url = f"{base}/api/events?run=0:live&from=0"
        with urllib.request.urlopen(url, timeout=300) as stream:
            for raw in stream:
                line = raw.decode().strip()
                if line.startswith("event: epoch"):
                    seen = time.time()
                    written = os.stat(os.path.join(live, "history.jsonl")).st_mtime
                    delays.append(seen - written)
                    if len(delays) == epochs:
                        break
        return delays
    finally:
        child.wait()


def quantile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trainer", default=os.path.join(HERE, "..", "target", "release", "trainer"))
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--loads", type=int, default=5)
    ap.add_argument("--no-browser", action="store_true")
    a = ap.parse_args()
    trainer = os.path.abspath(a.trainer)
    with tempfile.TemporaryDirectory() as tmp:
        first = os.path.join(tmp, "first")
        run([trainer, "train", "--out", first, "--epochs", "30", "--train-limit", "5000",
             "--backend", "flex", "--quiet"])
        root = os.path.join(tmp, "runs")
        for i in range(a.runs):
            shutil.copytree(first, os.path.join(root, f"run-{i:03d}"))
        run([sys.executable, os.path.join(HERE, "digit_pngs.py"), "--out", tmp, "0"])
        png_name = next(f for f in os.listdir(tmp) if f.startswith("digit-0-"))
        with open(os.path.join(tmp, png_name), "rb") as f:
            png = f.read()

        server, base = start_server(trainer, root)
        try:
            cold, body = timed_get(base + "/api/runs")
            listed = len(json.loads(body)["runs"])
            if listed != a.runs:
                sys.exit(f"error: {listed} runs listed, {a.runs} made")
            warm = [timed_get(base + "/api/runs")[0] for _ in range(max(a.loads, 1))]
            print(f"GET /api/runs, {a.runs} runs: first {cold * 1000:.1f} ms, "
                  f"then median {statistics.median(warm) * 1000:.1f} ms")
            server.kill()
            server.wait()
            server, base = start_server(trainer, root)
            if not a.no_browser:
                loads = page_loads(base, a.runs, max(a.loads, 1))
                if loads:
                    rest = statistics.median(loads[1:]) if len(loads) > 1 else loads[0]
                    print(f"page load in Chromium, {a.runs} runs: first {loads[0]:.3f} s "
                          f"(a fresh server), then median {rest:.3f} s")
            run_id = "0:run-000"
            timed_get(f"{base}/api/run?run={run_id}")
            latencies, errors, wall = classify_load(base, run_id, png, a.clients, a.requests)
            if errors or not latencies:
                sys.exit(f"error: {len(errors)} requests failed: {errors[:3]}")
            print(f"POST /api/classify, {a.clients} clients x {a.requests} requests: "
                  f"p50 {quantile(latencies, 0.5) * 1000:.1f} ms, "
                  f"p99 {quantile(latencies, 0.99) * 1000:.1f} ms, "
                  f"{len(latencies) / wall:.0f} requests/s")
            first, _ = timed_get(f"{base}/api/mistakes?run={run_id}")
            again, _ = timed_get(f"{base}/api/mistakes?run={run_id}&true=4&predicted=9")
            print(f"mistakes: the model's test pass {first * 1000:.0f} ms (once per model file), "
                  f"a cell's pictures then {again * 1000:.1f} ms")
            delays = live_delays(trainer, base, root)
            print(f"live epochs: {len(delays)} events, delay from the history line median "
                  f"{statistics.median(delays) * 1000:.0f} ms, largest {max(delays) * 1000:.0f} ms")
            with open(f"/proc/{server.pid}/status") as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
            print(f"server memory: peak {int(status['VmHWM'].split()[0]) / 1024:.1f} MB, "
                  f"now {int(status['VmRSS'].split()[0]) / 1024:.1f} MB")
        finally:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
