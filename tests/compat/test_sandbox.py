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


def test_a_guest_reads_its_task_metadata_and_sets_its_own_protection(server, ecs):
    """ECS_CONTAINER_METADATA_URI_V4 and ECS_AGENT_URI point at the task's
    own endpoints at 169.254.170.2, answered by skiff without any outbound
    rule; the protection a guest sets is the one UpdateTaskProtection
    sets, and the scheduler honours it."""
    import json

    name = deploy(ecs, [web(dockerLabels={"team": "edge"}, logConfiguration={"logDriver": "awslogs", "options": {
        "awslogs-group": "/skiff/meta", "awslogs-region": "us-east-1", "awslogs-stream-prefix": "app"}})])
    (arn,) = ecs.list_tasks(serviceName=name)["taskArns"]
    task = ecs.describe_tasks(tasks=[arn])["tasks"][0]

    def env(var):
        status, _, body = get(server, name, f"/env/{var}")
        assert status == 200, body
        return body.decode().strip()

    def fetch(url, method="GET", body=None):
        status, _, out = get(server, name, f"/fetch?url={url}", method=method, body=body)
        assert status == 200 and out.startswith(b"fetched "), out
        code, _, text = out.decode()[len("fetched "):].partition(": ")
        return int(code), text

    meta, agent = env("ECS_CONTAINER_METADATA_URI_V4"), env("ECS_AGENT_URI")
    assert meta.startswith("http://169.254.170.2/v4/") and agent.startswith("http://169.254.170.2/api/")

    # ARNs there carry the server's --region (the guest signs nothing);
    # the API's carry the region each request is signed for.
    def res(arn):
        return arn.split(":", 5)[5]

    code, text = fetch(f"{meta}/task")
    assert code == 200, text
    t = json.loads(text)
    assert t["TaskARN"].startswith("arn:aws:ecs:us-east-1:")
    assert (res(t["TaskARN"]), res(t["Cluster"]), t["ServiceName"]) == (res(arn), res(task["clusterArn"]), name)
    assert (t["Family"], t["Revision"]) == tuple(task["taskDefinitionArn"].rsplit("/", 1)[1].split(":"))
    assert (t["KnownStatus"], t["DesiredStatus"], t["LaunchType"]) == ("RUNNING", "RUNNING", "FARGATE")
    assert t["AvailabilityZone"] == task["availabilityZone"]
    code, text = fetch(meta)
    c = json.loads(text)
    assert (code, c["Name"], c["KnownStatus"]) == (200, "web", "RUNNING")
    assert c["Labels"]["team"] == "edge" and c["Labels"]["com.amazonaws.ecs.task-arn"] == t["TaskARN"]
    assert res(c["ContainerARN"]) == res(task["containers"][0]["containerArn"])
    assert c["LogOptions"] == {"awslogs-group": "/skiff/meta", "awslogs-region": "us-east-1",
                               "awslogs-stream": f"app/web/{arn.rsplit('/', 1)[1]}"}
    assert c == t["Containers"][0]
    code, text = fetch(f"{meta}/task/stats")
    assert code == 404 and "Docker stats are not served" in text

    state = f"{agent}/task-protection/v1/state"
    code, text = fetch(state)
    assert (code, json.loads(text)["protection"]) == (200, {"ProtectionEnabled": False, "TaskArn": t["TaskARN"]})
    code, text = fetch(state, "PUT", b'{"ProtectionEnabled": true, "ExpiresInMinutes": 10}')
    assert code == 200, text
    p = json.loads(text)["protection"]
    assert p["ProtectionEnabled"] and p["TaskArn"] == t["TaskARN"] and p["ExpirationDate"].endswith("Z")
    (seen,) = ecs.get_task_protection(cluster="default", tasks=[arn])["protectedTasks"]
    assert seen["protectionEnabled"] is True
    # The scheduler honours it: scaling to 0 leaves the protected task.
    ecs.update_service(service=name, desiredCount=0)
    from conftest import wait_for
    wait_for("the service to say it waits for the protected task",
             lambda: any("protected" in e["message"] for e in ecs.describe_services(services=[name])["services"][0]["events"]),
             timeout=30)
    assert ecs.describe_tasks(tasks=[arn])["tasks"][0]["desiredStatus"] == "RUNNING"
    code, text = fetch(state, "PUT", b'{"ProtectionEnabled": true, "ExpiresInMinutes": 9999}')
    assert code == 400 and "ExpiresInMinutes must be from 1 to 2880" in json.loads(text)["error"]["Message"]
    code, text = fetch(state, "PUT", b'{"ProtectionEnabled": false}')
    assert (code, json.loads(text)["protection"]["ProtectionEnabled"]) == (200, False)
    wait_for("the unprotected task to stop",
             lambda: ecs.describe_tasks(tasks=[arn])["tasks"][0]["desiredStatus"] == "STOPPED", timeout=30)
    delete(ecs, name)


def test_the_metadata_address_on_another_port_is_an_outbound_host_like_any_other(server, ecs):
    name = deploy(ecs, [web()])
    status, _, body = get(server, name, "/fetch?url=http://169.254.170.2:8080/v4/x")
    assert status == 502 and b"HttpRequestDenied" in body, body
    delete(ecs, name)
