"""What a task's guest may touch comes from its task definition: declared
volumes (read-only unless `readOnly: false`), and outbound HTTP only to the
hosts in `skiff.allowed-outbound-hosts`. Guests that try to leave are
refused, and nothing outside changes."""

import os
import shutil
import socket
import tempfile
import threading

import pytest
from botocore.exceptions import ClientError

from conftest import ROOT, uniq
from test_ingress import deploy, delete, get, web
from test_tasks import container, register, run_one, wait_stopped


@pytest.fixture()
def volume():
    root = tempfile.mkdtemp(prefix="skiff-sandbox-")
    vol = os.path.join(root, "vol")
    outside = os.path.join(root, "outside")
    os.makedirs(vol)
    os.makedirs(outside)
    with open(os.path.join(vol, "inside.txt"), "w") as f:
        f.write("inside")
    with open(os.path.join(outside, "secret.txt"), "w") as f:
        f.write("host secret")
    os.symlink(os.path.join(outside, "secret.txt"), os.path.join(vol, "abs-link"))
    os.symlink("../outside/secret.txt", os.path.join(vol, "rel-link"))
    os.symlink(outside, os.path.join(vol, "dir-link"))
    yield vol, outside
    shutil.rmtree(root, ignore_errors=True)


def run_echo(ecs, vol, args, read_only=None):
    mount = {"sourceVolume": "v", "containerPath": "/data"}
    if read_only is not None:
        mount["readOnly"] = read_only
    family = register(
        ecs,
        [container("main", "echo.wasm", command=args, mountPoints=[mount])],
        volumes=[{"name": "v", "host": {"sourcePath": vol}}],
    )
    task = run_one(ecs, family)
    (done,) = wait_stopped(ecs, [task["taskArn"]])
    return done["containers"][0].get("exitCode")


def test_volumes_are_read_only_unless_declared_writable(ecs, volume):
    vol, _ = volume
    assert run_echo(ecs, vol, ["--cat", "/data/inside.txt"]) == 0
    for args in (
        ["--write", "/data/new.txt"],
        ["--rm", "/data/inside.txt"],
        ["--mkdir", "/data/d"],
        ["--rename", "/data/inside.txt", "/data/moved.txt"],
    ):
        assert run_echo(ecs, vol, args) == 4, args
        assert run_echo(ecs, vol, args, read_only=True) == 4, args
    assert sorted(os.listdir(vol)) == ["abs-link", "dir-link", "inside.txt", "rel-link"]
    assert run_echo(ecs, vol, ["--write", "/data/new.txt"], read_only=False) == 0
    with open(os.path.join(vol, "new.txt")) as f:
        assert f.read() == "written"


def test_no_path_or_symlink_leads_out_of_a_volume(ecs, volume):
    vol, outside = volume
    for path in (
        "/data/abs-link",
        "/data/rel-link",
        "/data/dir-link/secret.txt",
        "/data/../outside/secret.txt",
        "/data/../../../../etc/passwd",
        "../outside/secret.txt",
        "/etc/passwd",
    ):
        assert run_echo(ecs, vol, ["--cat", path], read_only=False) == 3, path
    assert run_echo(ecs, vol, ["--write", "/data/dir-link/planted.txt"], read_only=False) == 4
    assert run_echo(ecs, vol, ["--write", "/data/abs-link"], read_only=False) == 4
    # A link the guest makes itself leads nowhere either.
    assert run_echo(ecs, vol, ["--symlink", "../outside/secret.txt", "mine", "--cat", "/data/mine"], read_only=False) != 0
    assert os.listdir(outside) == ["secret.txt"]
    with open(os.path.join(outside, "secret.txt")) as f:
        assert f.read() == "host secret"


class Recorder:
    """A listener on 127.0.0.1 that answers "listener" and counts what
    reached it."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.hits = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.hits += 1
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\nconnection: close\r\n\r\nlistener\n")
            conn.close()

    def close(self):
        self.sock.close()


def test_outbound_http_only_to_allowed_hosts(server, ecs):
    rec = Recorder()
    try:
        url = f"http://127.0.0.1:{rec.port}/hello"
        closed = deploy(ecs, [web()])
        status, _, body = get(server, closed, f"/fetch?url={url}")
        assert status == 502 and b"HttpRequestDenied" in body, body
        other = deploy(ecs, [web(dockerLabels={"skiff.allowed-outbound-hosts": "api.example.com, http://127.0.0.1:1"})])
        status, _, body = get(server, other, f"/fetch?url={url}")
        assert status == 502 and b"HttpRequestDenied" in body, body
        assert rec.hits == 0, "a denied request reached the listener"
        allowed = deploy(ecs, [web(dockerLabels={"skiff.allowed-outbound-hosts": f"http://127.0.0.1:{rec.port}"})])
        status, _, body = get(server, allowed, f"/fetch?url={url}")
        assert (status, body) == (200, b"fetched 200: listener\n")
        assert rec.hits == 1
        for name in (closed, other, allowed):
            delete(ecs, name)
    finally:
        rec.close()


def test_a_bad_outbound_rule_is_refused_naming_the_label(ecs):
    with pytest.raises(ClientError) as e:
        ecs.register_task_definition(
            family=uniq("bad"),
            containerDefinitions=[web(dockerLabels={"skiff.allowed-outbound-hosts": "ftp://files.example.com"})],
        )
    msg = e.value.response["Error"]["Message"]
    assert "skiff.allowed-outbound-hosts" in msg and "http://" in msg, msg
