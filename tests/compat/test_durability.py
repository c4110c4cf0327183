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
