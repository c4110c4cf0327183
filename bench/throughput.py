#!/usr/bin/env python3
"""HTTP throughput of skiff's ingress against `wasmtime serve` and native hyper.

Drives the same guests/dist/hello-http.wasm through
  (a) skiff: a 2-task service behind the ingress, --workers = server cores,
      over plain HTTP and over HTTPS (the same server's --ingress-tls, a
      self-signed P-256 certificate, keep-alive connections), and a second
      2-task service of the same guest with skiff.instance-reuse (an
      instance serves up to REUSE requests of its task),
  (b) skiff --workers 1 on one core (so throughput per core can be compared),
  (c) wasmtime serve 48.0.8 in its best configuration
      (-Scli -O pooling-allocator=y -O pooling-memory-keep-resident=10485760
       -O pooling-table-keep-resident=1048576),
  (d) a native hyper hello-world (examples/native_hello.rs),
with wrk at 32 connections in alternating rounds after a warm-up run of
each, and prints requests/s, p50 and p99 latency, the server's CPU time per
request (user + system from /proc, over the requests answered; less
sensitive than requests/s to what else the machine runs), all medians over
the rounds, non-2xx counts and ratios.

With SKIFF_BASELINE=PATH (another build of the skiff binary, for example
of the commit before a change), that binary serves the same service as (a)
in the same rounds, and the ratio of (a) to it is printed: a change's
effect measured under the same load as its peers.

Usage: bench/http.sh [SERVER_CPUS] [LOAD_CPUS] [ROUNDS] [DURATION]
  SERVER_CPUS  taskset list the servers run on (default: every core)
  LOAD_CPUS    taskset list wrk runs on (default: the same cores)
  ROUNDS       rounds per target (default 3)
  DURATION     seconds per wrk run (default 10)
"""

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUEST = os.path.join(ROOT, "guests", "dist", "hello-http.wasm")
SKIFF = os.path.join(ROOT, "target", "release", "skiff")
NATIVE = os.path.join(ROOT, "target", "release", "examples", "native_hello")
WASMTIME = shutil.which("wasmtime") or os.path.expanduser("~/.cargo/bin/wasmtime")
CONNECTIONS = 32
# skiff.instance-reuse of the reuse target: requests per instance.
REUSE = 1000


def cpus(spec):
    out = []
    for part in spec.split(","):
        if "-" in part:
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_http(url, host=None, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(url, headers={"Host": host} if host else {})
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer 200 within {timeout}s")


def ecs(api, action, body):
    req = urllib.request.Request(
        api,
        data=json.dumps(body).encode(),
        headers={
            "X-Amz-Target": f"AmazonEC2ContainerServiceV20141113.{action}",
            "Content-Type": "application/x-amz-json-1.1",
        },
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


class Target:
    def __init__(self, name, cores, url, pid, host=None):
        self.name, self.cores, self.url, self.pid, self.host = name, cores, url, pid, host
        self.rounds = []


def cpu_seconds(pid):
    """User + system CPU time the process has used (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(cmd, cpu_list, **kw):
    return subprocess.Popen(
        ["taskset", "-c", ",".join(map(str, cpu_list))] + cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        **kw,
    )


def stop(procs, dirs):
    """Stops the servers (each in its own session) and removes their
    data directories."""
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=30)
        except Exception:
            p.kill()
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def self_signed(directory):
    """default.crt and default.key (a self-signed certificate for
    hello.localhost), shown to clients that send no server name, as wrk
    does when it connects to an IP address."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=hello.localhost",
         "-addext", "subjectAltName=DNS:hello.localhost",
         "-keyout", os.path.join(directory, "default.key"), "-out", os.path.join(directory, "default.crt")],
        check=True, capture_output=True,
    )


def skiff(workers, cpu_list, data, tls=False, reuse=False, binary=SKIFF):
    api_port, ingress_port, tls_port = free_port(), free_port(), free_port()
    extra = []
    if tls:
        certs = os.path.join(data, "certs")
        os.makedirs(certs)
        self_signed(certs)
        extra = ["--ingress-tls", f"127.0.0.1:{tls_port}", "--tls-cert-dir", certs]
    proc = start(
        [binary, "server", "--workers", str(workers), "--data-dir", data,
         "--api", f"127.0.0.1:{api_port}", "--ingress", f"127.0.0.1:{ingress_port}"] + extra,
        cpu_list,
    )
    api = f"http://127.0.0.1:{api_port}/"
    deadline = time.monotonic() + 60
    while True:
        try:
            ecs(api, "ListClusters", {})
            break
        except Exception:
            if time.monotonic() > deadline:
                raise SystemExit("skiff server did not start")
            time.sleep(0.1)
    ecs(api, "RegisterTaskDefinition", {
        "family": "hello",
        "containerDefinitions": [{"name": "web", "image": GUEST, "memory": 128,
                                  "dockerLabels": {"skiff.concurrency": "1000"}}],
    })
    ecs(api, "CreateService", {"serviceName": "hello", "taskDefinition": "hello", "desiredCount": 2})
    services = ["hello"]
    if reuse:
        # The same guest with skiff.instance-reuse: hello-reuse.localhost.
        ecs(api, "RegisterTaskDefinition", {
            "family": "hello-reuse",
            "containerDefinitions": [{"name": "web", "image": GUEST, "memory": 128,
                                      "dockerLabels": {"skiff.concurrency": "1000",
                                                       "skiff.instance-reuse": str(REUSE)}}],
        })
        ecs(api, "CreateService", {"serviceName": "hello-reuse", "taskDefinition": "hello-reuse",
                                   "desiredCount": 2})
        services.append("hello-reuse")
    while any(s["runningCount"] != 2 for s in ecs(api, "DescribeServices", {"services": services})["services"]):
        time.sleep(0.1)
    url = f"http://127.0.0.1:{ingress_port}/"
    for s in services:
        wait_http(url, f"{s}.localhost")
    return proc, url, f"https://127.0.0.1:{tls_port}/"


def run_wrk(t, load_cpus, duration):
    cmd = ["taskset", "-c", ",".join(map(str, load_cpus)), "wrk", f"-t{min(len(load_cpus), 4)}",
           f"-c{CONNECTIONS}", f"-d{duration}s", "--latency", t.url]
    if t.host:
        cmd[-1:-1] = ["-H", f"Host: {t.host}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def latency(pct):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    requests = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {"rps": rps, "requests": requests, "p50": latency(50), "p99": latency(99),
            "non2xx": int(bad.group(1)) if bad else 0,
            "errors": errors.group(0) if errors else ""}


def main():
    args = sys.argv[1:]
    n = os.cpu_count() or 1
    server_cpus = cpus(args[0]) if len(args) > 0 else list(range(n))
    load_cpus = cpus(args[1]) if len(args) > 1 else server_cpus
    rounds = int(args[2]) if len(args) > 2 else 3
    duration = int(args[3]) if len(args) > 3 else 10
    for tool, hint in [("wrk", "apt-get install wrk"), ("taskset", "apt-get install util-linux")]:
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: {hint}")
    if not os.path.exists(WASMTIME):
        raise SystemExit("wasmtime is missing: cargo install wasmtime-cli --version 48.0.8 --locked")
    version = subprocess.run([WASMTIME, "--version"], capture_output=True, text=True).stdout.strip()
    if "48.0.8" not in version:
        raise SystemExit(f"{WASMTIME} is {version}; install 48.0.8: cargo install wasmtime-cli --version 48.0.8 --locked")
    subprocess.run(["cargo", "build", "--release", "--bin", "skiff", "--example", "native_hello"],
                   cwd=ROOT, check=True, stderr=subprocess.DEVNULL)

    print(f"server cores {server_cpus}, wrk cores {load_cpus}, {CONNECTIONS} connections, "
          f"{rounds} rounds of {duration}s, {version}", flush=True)
    procs, dirs, targets = [], [], []
    try:
        w = len(server_cpus)
        d = tempfile.mkdtemp(prefix="skiff-bench-")
        dirs.append(d)
        p, url, tls_url = skiff(w, server_cpus, d, tls=True, reuse=True)
        procs.append(p)
        targets.append(Target(f"skiff --workers {w}", w, url, p.pid, "hello.localhost"))
        https = Target("skiff https", w, tls_url, p.pid, "hello.localhost")
        targets.append(https)
        reused = Target("skiff instance-reuse", w, url, p.pid, "hello-reuse.localhost")
        targets.append(reused)
        if w > 1:
            d = tempfile.mkdtemp(prefix="skiff-bench-")
            dirs.append(d)
            p, url, _ = skiff(1, server_cpus[:1], d)
            procs.append(p)
            targets.append(Target("skiff --workers 1", 1, url, p.pid, "hello.localhost"))
        baseline = os.environ.get("SKIFF_BASELINE")
        if baseline:
            if not os.access(baseline, os.X_OK):
                raise SystemExit(f"SKIFF_BASELINE={baseline} is not an executable skiff binary")
            d = tempfile.mkdtemp(prefix="skiff-bench-")
            dirs.append(d)
            p, url, _ = skiff(w, server_cpus, d, binary=baseline)
            procs.append(p)
            targets.append(Target("skiff baseline", w, url, p.pid, "hello.localhost"))
        port = free_port()
        procs.append(start(
            [WASMTIME, "serve", "-Scli", "-O", "pooling-allocator=y",
             "-O", "pooling-memory-keep-resident=10485760", "-O", "pooling-table-keep-resident=1048576",
             "--addr", f"127.0.0.1:{port}", GUEST],
            server_cpus,
        ))
        wasmtime = Target("wasmtime serve", w, f"http://127.0.0.1:{port}/", procs[-1].pid)
        wait_http(wasmtime.url)
        targets.append(wasmtime)
        port = free_port()
        procs.append(start([NATIVE, f"127.0.0.1:{port}", str(w)], server_cpus))
        native = Target("native hyper", w, f"http://127.0.0.1:{port}/", procs[-1].pid)
        wait_http(native.url)
        targets.append(native)

        # Warm every target up first (pool slots, page tables, caches), so
        # that the first round does not pay for it.
        for t in targets:
            run_wrk(t, load_cpus, 3)
        for r in range(rounds):
            for t in targets:
                before = cpu_seconds(t.pid)
                res = run_wrk(t, load_cpus, duration)
                res["cpu_us"] = (cpu_seconds(t.pid) - before) * 1e6 / max(res["requests"], 1)
                t.rounds.append(res)
                print(f"  round {r + 1} {t.name:<20} {res['rps']:>9.0f} req/s  p50 {res['p50']:.2f} ms  "
                      f"p99 {res['p99']:.2f} ms  CPU {res['cpu_us']:.1f} µs/req  "
                      f"non-2xx {res['non2xx']} {res['errors']}", flush=True)
    finally:
        stop(procs, dirs)

    med = lambda t, k: statistics.median(x[k] for x in t.rounds)  # noqa: E731
    print()
    print(f"{'target':<20} {'cores':>5} {'req/s':>9} {'req/s/core':>10} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'CPU µs/req':>10} {'non-2xx':>8}")
    for t in targets:
        print(f"{t.name:<20} {t.cores:>5} {med(t, 'rps'):>9.0f} {med(t, 'rps') / t.cores:>10.0f} "
              f"{med(t, 'p50'):>7.2f} {med(t, 'p99'):>7.2f} {med(t, 'cpu_us'):>10.1f} "
              f"{sum(x['non2xx'] for x in t.rounds):>8}")
    main_t = targets[0]
    print()
    print(f"skiff / wasmtime serve: {med(main_t, 'rps') / med(wasmtime, 'rps'):.2f}x requests/s (target, issue #15: at least 2.5x)")
    print(f"skiff / native hyper:   {med(main_t, 'rps') / med(native, 'rps'):.2f}x requests/s (target, issue #15: at least 0.5x)")
    print(f"server CPU per request: wasmtime serve / skiff {med(wasmtime, 'cpu_us') / med(main_t, 'cpu_us'):.2f}x, "
          f"skiff / native hyper {med(main_t, 'cpu_us') / med(native, 'cpu_us'):.2f}x "
          "(the server's user + system time over the requests it answered; wrk's share of the cores is not in it)")
    print(f"with skiff.instance-reuse: {REUSE} (an instance serves up to {REUSE} requests of its task; "
          "wasmtime serve has no such mode for WASIp2, so these are not like for like):")
    print(f"  skiff / wasmtime serve: {med(reused, 'rps') / med(wasmtime, 'rps'):.2f}x requests/s, "
          f"skiff / native hyper: {med(reused, 'rps') / med(native, 'rps'):.2f}x requests/s, "
          f"server CPU per request: {med(reused, 'cpu_us') / med(native, 'cpu_us'):.2f}x native hyper's")
    print(f"skiff https / http:     {med(https, 'rps') / med(main_t, 'rps'):.2f}x requests/s, same server, "
          f"keep-alive connections (target, issue #14: at least 0.8x)")
    base = next((t for t in targets if t.name == "skiff baseline"), None)
    if base:
        print(f"skiff / SKIFF_BASELINE:  {med(main_t, 'rps') / med(base, 'rps'):.2f}x requests/s, "
              f"server CPU per request {med(main_t, 'cpu_us') / med(base, 'cpu_us'):.2f}x the baseline's "
              f"(baseline / wasmtime serve: {med(base, 'rps') / med(wasmtime, 'rps'):.2f}x requests/s)")
    one = next((t for t in targets if t.name == "skiff --workers 1"), None)
    if one:
        print(f"skiff per core, {main_t.cores} workers vs 1: "
              f"{(med(main_t, 'rps') / main_t.cores) / med(one, 'rps'):.2f} (1.00 means it holds)")
        if set(load_cpus) & set(server_cpus):
            print("  (wrk shares the servers' cores here, so one worker on one core also has the other")
            print("   core's share of wrk to itself; per-core numbers compare only with LOAD_CPUS apart)")


if __name__ == "__main__":
    main()
