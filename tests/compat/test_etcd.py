"""boto3 and aws-cli against `skiff server --store etcd://...`, with a real
etcd (Debian's etcd-server) on 127.0.0.1: the same API on the other store,
and the state in etcd, not in the server: a second server, on another data
directory, sees what the first one wrote."""

import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import ROOT, Server, uniq, wait_for

DIST = os.path.join(ROOT, "guests", "dist")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def etcd():
    binary = shutil.which("etcd")
    if binary is None:
        pytest.fail("etcd is not installed: apt-get install etcd-server (.ci/run does)")
    data = tempfile.mkdtemp(prefix="skiff-etcd-")
    client, peer = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [binary, "--name", "c", "--data-dir", os.path.join(data, "d"),
         "--listen-client-urls", client, "--advertise-client-urls", client,
         "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
         "--initial-cluster", f"c={peer}", "--max-txn-ops", "4096"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )

    def up():
        if proc.poll() is not None:
            pytest.fail(f"etcd exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", int(client.rsplit(":", 1)[1])), timeout=1):
                return True
        except OSError:
            return False

    wait_for("etcd to listen", up, timeout=60)
    yield client.replace("http://", "")
    proc.kill()
    proc.wait()
    shutil.rmtree(data, ignore_errors=True)


def test_the_api_on_etcd_and_a_second_server_sees_the_first_ones_state(etcd):
    store = f"etcd://{etcd}/{uniq('ns')}"
    first_dir, second_dir = tempfile.mkdtemp(), tempfile.mkdtemp()
    first = Server(first_dir, "--store", store, "--workers", "1").start()
    try:
        ecs = first.client()
        family, svc = uniq("web"), uniq("svc")
        image = os.path.join(DIST, "hello-http.wasm")
        ecs.register_task_definition(
            family=family,
            containerDefinitions=[{"name": "web", "image": image, "memory": 32}],
        )
        ecs.create_service(serviceName=svc, taskDefinition=family, desiredCount=2)
        wait_for("2 running", lambda: ecs.describe_services(services=[svc])["services"][0]["runningCount"] == 2)
        arns = ecs.list_tasks(serviceName=svc)["taskArns"]
        assert len(arns) == 2
    finally:
        first.stop()

    # Another server, another data directory: all it knows is in etcd.
    second = Server(second_dir, "--store", store, "--workers", "1").start()
    try:
        ecs = second.client()
        td = ecs.describe_task_definition(taskDefinition=family)["taskDefinition"]
        assert td["revision"] == 1 and td["containerDefinitions"][0]["image"] == image
        got = ecs.describe_services(services=[svc])["services"][0]
        assert got["desiredCount"] == 2 and got["status"] == "ACTIVE"
        # The first server stopped its tasks on its way out; this one
        # starts the service's two again.
        stopped = ecs.describe_tasks(tasks=arns)["tasks"]
        assert {t["lastStatus"] for t in stopped} == {"STOPPED"}
        wait_for("2 running again", lambda: ecs.describe_services(services=[svc])["services"][0]["runningCount"] == 2)
        # aws-cli sees the same.
        out = subprocess.run(
            [os.path.join(ROOT, ".venv", "bin", "aws"), "ecs", "describe-services",
             "--services", svc, "--endpoint-url", second.endpoint, "--region", "us-west-2",
             "--output", "json"],
            env={**os.environ, "AWS_ACCESS_KEY_ID": "AKIDSKIFFTEST", "AWS_SECRET_ACCESS_KEY": "x"},
            capture_output=True, text=True, timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert '"runningCount": 2' in out.stdout
    finally:
        second.stop()
        shutil.rmtree(first_dir, ignore_errors=True)
        shutil.rmtree(second_dir, ignore_errors=True)
