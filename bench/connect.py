#!/usr/bin/env python3
"""Service-to-service calls: skiff's Service Connect (in process) against
the same call over a socket, in skiff and between two `wasmtime serve`s.

Each target answers a request by calling another guest and returning its
answer (guests/dist/hello-http.wasm's /fetch?url=URL), with wrk at 32
connections in alternating rounds:
  (a) skiff, the caller's service calling `http://backend/` by its
      Service Connect name: the host routes the call to a backend task in
      process,
  (b) skiff, the same caller calling the backend's hostPort listener at
      http://127.0.0.1:PORT/ (an allowed outbound host): a TCP connection
      per call, as a guest without Service Connect would,
  (c) two `wasmtime serve` 48.0.8 processes (tuned as in bench/http.sh),
      the first calling the second over a socket, as Spin or wasmtime
      serve apps call each other,
and prints requests/s, p50/p99, the servers' CPU time per request (both
hops, all processes of the target) and the ratios.

Usage: bench/connect.py [SERVER_CPUS] [LOAD_CPUS] [ROUNDS] [DURATION]
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import throughput as t  # noqa: E402


class Target:
    def __init__(self, name, url, pids, host=None):
        self.name, self.url, self.pids, self.host = name, url, pids, host
        self.rounds = []


def skiff(cpu_list, data, workers):
    api_port, ingress_port, host_port = t.free_port(), t.free_port(), t.free_port()
    proc = t.start([t.SKIFF, "server", "--workers", str(workers), "--data-dir", data,
                    "--api", f"127.0.0.1:{api_port}", "--ingress", f"127.0.0.1:{ingress_port}"], cpu_list)
    api = f"http://127.0.0.1:{api_port}/"
    deadline = time.monotonic() + 60
    while True:
        try:
            t.ecs(api, "ListClusters", {})
            break
        except Exception:
            if time.monotonic() > deadline:
                raise SystemExit("skiff server did not start")
            time.sleep(0.1)
    labels = {"skiff.concurrency": "1000"}
    t.ecs(api, "RegisterTaskDefinition", {"family": "backend", "containerDefinitions": [{
        "name": "web", "image": t.GUEST, "memory": 128, "dockerLabels": labels,
        "environment": [{"name": "GREETING", "value": "backend"}],
        "portMappings": [{"name": "api", "containerPort": 8080, "hostPort": host_port}]}]})
    t.ecs(api, "CreateService", {
        "serviceName": "backend", "taskDefinition": "backend", "desiredCount": 2,
        "serviceConnectConfiguration": {"enabled": True, "namespace": "bench", "services": [
            {"portName": "api", "clientAliases": [{"port": 80, "dnsName": "backend"}]}]}})
    t.ecs(api, "RegisterTaskDefinition", {"family": "caller", "containerDefinitions": [{
        "name": "web", "image": t.GUEST, "memory": 128,
        "dockerLabels": dict(labels, **{"skiff.allowed-outbound-hosts": f"http://127.0.0.1:{host_port}"})}]})
    # Created after the backend, so that its tasks know the name.
    t.ecs(api, "CreateService", {
        "serviceName": "caller", "taskDefinition": "caller", "desiredCount": 2,
        "serviceConnectConfiguration": {"enabled": True, "namespace": "bench"}})
    while any(s["runningCount"] != 2 for s in t.ecs(api, "DescribeServices", {"services": ["backend", "caller"]})["services"]):
        time.sleep(0.1)
    base = f"http://127.0.0.1:{ingress_port}"
    t.wait_http(f"{base}/", "caller.localhost")
    t.wait_http(f"http://127.0.0.1:{host_port}/")
    return proc, base, host_port


def check(target):
    import urllib.request
    req = urllib.request.Request(target.url, headers={"Host": target.host} if target.host else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read()
    if not body.startswith(b"fetched 200: hello from skiff"):
        raise SystemExit(f"{target.name}: {body!r}")


def main():
    args = sys.argv[1:]
    n = os.cpu_count() or 1
    server_cpus = t.cpus(args[0]) if len(args) > 0 else list(range(n))
    load_cpus = t.cpus(args[1]) if len(args) > 1 else server_cpus
    rounds = int(args[2]) if len(args) > 2 else 3
    duration = int(args[3]) if len(args) > 3 else 5
    if not os.path.exists(t.WASMTIME):
        raise SystemExit("wasmtime is missing: cargo install wasmtime-cli --version 48.0.8 --locked")
    subprocess.run(["cargo", "build", "--release", "--bin", "skiff"], check=True, cwd=t.ROOT)
    procs, dirs, targets = [], [], []
    w = len(server_cpus)
    try:
        d = tempfile.mkdtemp(prefix="skiff-bench-")
        dirs.append(d)
        p, base, host_port = skiff(server_cpus, d, w)
        procs.append(p)
        targets.append(Target("skiff Service Connect", f"{base}/fetch?url=http://backend/", [p.pid], "caller.localhost"))
        targets.append(Target("skiff over a socket", f"{base}/fetch?url=http://127.0.0.1:{host_port}/",
                              [p.pid], "caller.localhost"))
        back, front = t.free_port(), t.free_port()
        tuned = ["-Scli", "-O", "pooling-allocator=y", "-O", "pooling-memory-keep-resident=10485760",
                 "-O", "pooling-table-keep-resident=1048576"]
        procs.append(t.start([t.WASMTIME, "serve", *tuned, "--env", "GREETING=backend",
                              "--addr", f"127.0.0.1:{back}", t.GUEST], server_cpus))
        procs.append(t.start([t.WASMTIME, "serve", *tuned, "--addr", f"127.0.0.1:{front}", t.GUEST], server_cpus))
        t.wait_http(f"http://127.0.0.1:{back}/")
        t.wait_http(f"http://127.0.0.1:{front}/")
        targets.append(Target("wasmtime serve pair", f"http://127.0.0.1:{front}/fetch?url=http://127.0.0.1:{back}/",
                              [procs[-2].pid, procs[-1].pid]))
        for target in targets:
            check(target)
            t.run_wrk(target, load_cpus, 2)
        for r in range(rounds):
            for target in targets:
                before = sum(t.cpu_seconds(pid) for pid in target.pids)
                res = t.run_wrk(target, load_cpus, duration)
                res["cpu_us"] = (sum(t.cpu_seconds(pid) for pid in target.pids) - before) * 1e6 / max(res["requests"], 1)
                target.rounds.append(res)
                print(f"  round {r + 1} {target.name:<22} {res['rps']:>8.0f} req/s  p50 {res['p50']:.2f} ms  "
                      f"p99 {res['p99']:.2f} ms  CPU {res['cpu_us']:.1f} µs/req  non-2xx {res['non2xx']} {res['errors']}",
                      flush=True)
    finally:
        t.stop(procs, dirs)

    med = lambda x, k: statistics.median(r[k] for r in x.rounds)  # noqa: E731
    print()
    print(f"{'target':<22} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'CPU µs/req':>10} {'non-2xx':>8}")
    for x in targets:
        print(f"{x.name:<22} {med(x, 'rps'):>8.0f} {med(x, 'p50'):>7.2f} {med(x, 'p99'):>7.2f} "
              f"{med(x, 'cpu_us'):>10.1f} {sum(r['non2xx'] for r in x.rounds):>8}")
    sc, sock, pair = targets
    print()
    print(f"Service Connect / the same call over a socket: {med(sc, 'rps') / med(sock, 'rps'):.2f}x requests/s, "
          f"{med(sock, 'cpu_us') / med(sc, 'cpu_us'):.2f}x less CPU per request")
    print(f"Service Connect / wasmtime serve pair:         {med(sc, 'rps') / med(pair, 'rps'):.2f}x requests/s, "
          f"{med(pair, 'cpu_us') / med(sc, 'cpu_us'):.2f}x less CPU per request")


if __name__ == "__main__":
    main()
