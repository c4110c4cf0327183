"""Starts a real `skiff server` for the compat tests and points boto3 at it."""

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid

import boto3
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SKIFF = os.environ.get("SKIFF_BIN", os.path.join(ROOT, "target", "release", "skiff"))
REGION = "us-west-2"


def uniq(prefix):
    """A name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def free_port():
    """A port free on 127.0.0.1 now (for servers that cannot be given port 0)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(what, fn, timeout=60.0):
    """Polls fn until it returns something truthy; fails naming `what`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last saw {last!r}")


class Server:
    """A skiff server on free ports, in its own data directory."""

    def __init__(self, data_dir, *args, wrap=(), env=None):
        self.data_dir = data_dir
        self.args = list(args)
        # A command the server runs under (strace, for example).
        self.wrap = list(wrap)
        # Its environment, when not this process's.
        self.env = env
        self.proc = None
        self.endpoint = None
        self.ingress = None
        self.ingress_tls = None

    def start(self, timeout=60, api="127.0.0.1:0", ingress="127.0.0.1:0"):
        self.proc = subprocess.Popen(
            self.wrap
            + [SKIFF, "server", "--data-dir", self.data_dir, "--api", api, "--ingress", ingress]
            + self.args,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
            env=self.env,
        )
        lines = queue.Queue()

        def pump():
            for line in self.proc.stderr:
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            m = re.search(r"API on (http://[0-9.:]+)/", line)
            if m:
                self.endpoint = m.group(1)
            m = re.search(r"HTTPS ingress on https://([0-9.]+):([0-9]+)/", line)
            if m:
                self.ingress_tls = (m.group(1), int(m.group(2)))
            m = re.search(r"ingress on http://([0-9.]+):([0-9]+)/", line)
            if m:
                self.ingress = (m.group(1), int(m.group(2)))
                return self
        raise RuntimeError(f"skiff server did not start (exit {self.proc.poll()})")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self, service="ecs"):
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="AKIDSKIFFTEST",
            aws_secret_access_key="not-checked-yet",
        )


@pytest.fixture(scope="session")
def server():
    data = tempfile.mkdtemp(prefix="skiff-compat-")
    s = Server(data).start()
    yield s
    s.stop()
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture()
def ecs(server):
    return server.client()


@pytest.fixture()
def fresh_dir():
    d = tempfile.mkdtemp(prefix="skiff-crash-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def auth_server(keys, prefix):
    """Yields a server started with `--auth` on a keys file holding `keys`
    (for a fixture), and removes its directory after."""
    data = tempfile.mkdtemp(prefix=prefix)
    path = os.path.join(data, "keys.json")
    with open(path, "w") as f:
        json.dump(keys, f)
    s = Server(os.path.join(data, "data"), "--auth", path).start()
    yield s
    s.stop()
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture()
def etcd():
    """Debian's etcd on free ports in its own data directory: its client
    address (HOST:PORT)."""
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
