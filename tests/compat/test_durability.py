"""A crash test: acknowledged writes survive kill -9."""

import concurrent.futures
import os

from conftest import ROOT, Server

HELLO = os.path.join(ROOT, "guests", "dist", "hello-http.wasm")


def test_acknowledged_writes_survive_kill_9(fresh_dir):
    s = Server(fresh_dir).start()
    ecs = s.client()
    doc = {"family": "crash", "containerDefinitions": [{"name": "c", "image": HELLO, "memory": 16}]}
    n = 120

    def register(i):
        return ecs.register_task_definition(**doc, tags=[{"key": "i", "value": str(i)}])["taskDefinition"]["revision"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        revisions = list(pool.map(register, range(n)))
    clusters = [f"crash-{i}" for i in range(20)]
    for c in clusters:
        ecs.create_cluster(clusterName=c)
    # Every acknowledged registration got its own revision.
    assert sorted(revisions) == list(range(1, n + 1))
    s.kill9()

    s2 = Server(fresh_dir).start()
    try:
        ecs = s2.client()
        pages = ecs.get_paginator("list_task_definitions").paginate(familyPrefix="crash")
        arns = [a for p in pages for a in p["taskDefinitionArns"]]
        assert len(arns) == n
        described = ecs.describe_clusters(clusters=clusters)
        assert described["failures"] == []
        assert all(c["status"] == "ACTIVE" for c in described["clusters"])
        assert ecs.register_task_definition(**doc)["taskDefinition"]["revision"] == n + 1
        tags = ecs.list_tags_for_resource(resourceArn=arns[0])["tags"]
        assert len(tags) == 1 and tags[0]["key"] == "i"
    finally:
        s2.stop()


def test_start_up_errors_say_what_to_do(fresh_dir):
    import subprocess

    from conftest import SKIFF

    s = Server(fresh_dir).start()
    try:
        # The same data directory twice.
        out = subprocess.run(
            [SKIFF, "server", "--data-dir", fresh_dir, "--api", "127.0.0.1:0", "--ingress", "127.0.0.1:0"],
            capture_output=True, text=True, timeout=60,
        )
        assert out.returncode != 0
        assert "another skiff server is using the data directory" in out.stderr
        # A port that is taken.
        port = s.endpoint.rsplit(":", 1)[1]
        other = os.path.join(fresh_dir, "other")
        out = subprocess.run(
            [SKIFF, "server", "--data-dir", other, "--api", f"127.0.0.1:{port}", "--ingress", "127.0.0.1:0"],
            capture_output=True, text=True, timeout=60,
        )
        assert out.returncode != 0
        assert f"cannot listen on 127.0.0.1:{port} for the API" in out.stderr and "--api" in out.stderr
    finally:
        s.stop()
    # A corrupt store.
    corrupt = os.path.join(fresh_dir, "corrupt")
    os.makedirs(corrupt)
    with open(os.path.join(corrupt, "store.db"), "wb") as f:
        f.write(b"\x42" * 8192)
    out = subprocess.run(
        [SKIFF, "server", "--data-dir", corrupt, "--api", "127.0.0.1:0", "--ingress", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode != 0 and "move it" in out.stderr


def test_running_tasks_are_reported_stopped_after_kill_9(fresh_dir):
    s = Server(fresh_dir).start()
    ecs = s.client()
    ecs.register_task_definition(
        family="web", containerDefinitions=[{"name": "web", "image": os.path.join(ROOT, "guests", "dist", "hello-http.wasm"), "memory": 16}]
    )
    arns = [t["taskArn"] for t in ecs.run_task(taskDefinition="web", count=2)["tasks"]]
    ecs.get_waiter("tasks_running").wait(tasks=arns, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    s.kill9()
    s2 = Server(fresh_dir).start()
    try:
        ecs = s2.client()
        tasks = ecs.describe_tasks(tasks=arns)["tasks"]
        assert [t["lastStatus"] for t in tasks] == ["STOPPED", "STOPPED"]
        assert all(t["stoppedReason"] == "the skiff server stopped while the task was running" for t in tasks)
        assert ecs.list_tasks()["taskArns"] == []
    finally:
        s2.stop()


def test_an_acknowledged_write_was_fsynced_before_its_answer(fresh_dir):
    """kill -9 cannot show a missing fsync (the page cache outlives the
    process), so this watches the system calls instead: between reading a
    CreateCluster request and writing its answer, the server must have
    written the new record to the store's write-ahead log and then fsynced
    that file. SQLite's synchronous=NORMAL (fsync only at checkpoints) or
    OFF fails this; FULL passes."""
    import re
    import shutil as sh
    import signal

    from conftest import wait_for

    strace = sh.which("strace")
    assert strace, "strace is needed for this test (apt-get install strace; .ci/run installs it)"
    log = os.path.join(fresh_dir, "strace.log")
    calls = "read,readv,recvfrom,recvmsg,write,writev,pwrite64,pwritev,sendto,sendmsg,fsync,fdatasync"
    s = Server(
        os.path.join(fresh_dir, "data"),
        wrap=[strace, "-f", "-y", "-ttt", "-qq", "-s", "65536", "-e", f"trace={calls}", "-o", log],
    ).start(timeout=120)
    name = "fsync-" + os.urandom(6).hex()
    try:
        s.client().create_cluster(clusterName=name)
    finally:
        # Stopping strace only detaches it: stop the server it traces.
        with open(f"/proc/{s.proc.pid}/task/{s.proc.pid}/children") as f:
            traced = [int(p) for p in f.read().split()]
        for pid in traced:
            os.kill(pid, signal.SIGTERM)
        s.proc.wait(timeout=60)
        for pid in traced:
            wait_for(f"the traced server {pid} to exit", lambda: not os.path.exists(f"/proc/{pid}"), timeout=30)

    # One record per system call: (start, end, name, text), joining
    # "<unfinished ...>" with its "<... resumed>" by thread.
    line_re = re.compile(r"^(\d+)\s+(\d+\.\d+) (.*)$")
    pending, records = {}, []
    with open(log, errors="replace") as f:
        for line in f:
            m = line_re.match(line.rstrip("\n"))
            if not m:
                continue
            pid, ts, text = m.group(1), float(m.group(2)), m.group(3)
            if text.endswith("<unfinished ...>"):
                pending[pid] = (ts, text)
                continue
            r = re.match(r"<\.\.\. (\w+) resumed>(.*)", text)
            if r and pid in pending:
                start, head = pending.pop(pid)
                records.append((start, ts, r.group(1), head + r.group(2)))
                continue
            c = re.match(r"(\w+)\(", text)
            if c:
                records.append((ts, ts, c.group(1), text))

    def first(after, names, *needles):
        for rec in records:
            if rec[0] >= after and rec[2] in names and all(n in rec[3] for n in needles):
                return rec
        return None

    request = first(0, {"read", "readv", "recvfrom", "recvmsg"}, "<socket:[", name)
    assert request, f"the request for {name} was not seen being read"
    wal_write = first(request[1], {"write", "pwrite64", "pwritev", "writev"}, "store.db-wal", name)
    assert wal_write, f"the record {name} was not written to the WAL after its request"
    answer = first(request[1], {"write", "writev", "sendto", "sendmsg"}, "<socket:[", name)
    assert answer, f"the answer for {name} was not seen being written"
    sync = first(wal_write[1], {"fsync", "fdatasync"}, "store.db-wal")
    assert sync and sync[1] <= answer[0], (
        f"the answer for {name} was sent at {answer[0]:.6f} before the WAL was fsynced "
        f"({'at %.6f' % sync[1] if sync else 'never'})"
    )
