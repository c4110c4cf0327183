"""Images from a real OCI registry (Debian's docker-registry, distribution
2.8, started here with its own config and htpasswd on 127.0.0.1): `skiff
push`, services and tasks from references, digests pinned per deployment,
and each kind of pull failure in ECS's words."""

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request

import bcrypt
import pytest

from conftest import ROOT, SKIFF, Server, free_port, uniq, wait_for

HELLO = os.path.join(ROOT, "guests", "dist", "hello-http.wasm")
ECHO = os.path.join(ROOT, "guests", "dist", "echo.wasm")
USER, PASSWORD = "skiff", "s3cret-pw"



def custom_section(name, payload):
    """A wasm custom section: appended to a module or component it changes
    the bytes (and so the digest) without changing what runs."""

    def leb(n):
        out = bytearray()
        while True:
            b = n & 0x7F
            n >>= 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)

    body = leb(len(name)) + name.encode() + payload
    return b"\x00" + leb(len(body)) + body


def variant(path, tag, size=0):
    """The wasm at `path` with a custom section naming `tag` (and `size`
    bytes of padding), in a new file."""
    with open(path, "rb") as f:
        wasm = f.read()
    out = tempfile.NamedTemporaryFile(suffix=".wasm", delete=False)
    out.write(wasm + custom_section("skiff-test", tag.encode() + b"\0" * size))
    out.close()
    return out.name


class Registry:
    def __init__(self):
        if not shutil.which("docker-registry"):
            raise RuntimeError("docker-registry is missing: apt-get install docker-registry")
        self.dir = tempfile.mkdtemp(prefix="skiff-registry-")
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        with open(os.path.join(self.dir, "htpasswd"), "w") as f:
            f.write(f"{USER}:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()}\n")
        config = os.path.join(self.dir, "config.yml")
        with open(config, "w") as f:
            f.write(
                "version: 0.1\n"
                "log:\n  level: warn\n"
                f"storage:\n  filesystem:\n    rootdirectory: {self.dir}/data\n"
                f"http:\n  addr: {self.host}\n  secret: skiff-test\n"
                f"auth:\n  htpasswd:\n    realm: skiff-test\n    path: {self.dir}/htpasswd\n"
            )
        self.proc = subprocess.Popen(
            ["docker-registry", "serve", config],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def up():
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1)
            except urllib.error.HTTPError as e:
                return e.code == 401
            except OSError:
                return False
            return False

        wait_for("the registry to answer", up, timeout=30)
        # The server's login, as `docker login` would write it.
        self.docker_config = os.path.join(self.dir, "docker", "config.json")
        os.makedirs(os.path.dirname(self.docker_config))
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        with open(self.docker_config, "w") as f:
            json.dump({"auths": {self.host: {"auth": token}}}, f)
        # Secrets repositoryCredentials can name.
        self.secrets = os.path.join(self.dir, "secrets")
        os.makedirs(self.secrets)
        for name, pw in [("good", PASSWORD), ("wrong", "not-the-password")]:
            with open(os.path.join(self.secrets, name), "w") as f:
                json.dump({"username": USER, "password": pw}, f)

    def request(self, method, path, data=None, headers=None):
        req = urllib.request.Request(f"http://{self.host}{path}", data=data, method=method)
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        return urllib.request.urlopen(req, timeout=10)

    def upload(self, repo, blob):
        """Uploads a blob (monolithic); returns its digest."""
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        r = self.request("POST", f"/v2/{repo}/blobs/uploads/", data=b"")
        location = r.headers["Location"]
        sep = "&" if "?" in location else "?"
        path = location.split(self.host, 1)[-1]
        self.request("PUT", f"{path}{sep}digest={digest}", data=blob,
                     headers={"Content-Type": "application/octet-stream"})
        return digest

    def manifest(self, repo, ref):
        r = self.request("GET", f"/v2/{repo}/manifests/{ref}",
                         headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        return json.load(r)

    def blob_file(self, digest):
        hexd = digest.split(":", 1)[1]
        return os.path.join(self.dir, "data", "docker", "registry", "v2", "blobs", "sha256",
                            hexd[:2], hexd, "data")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def registry():
    r = Registry()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def node(registry):
    data = tempfile.mkdtemp(prefix="skiff-compat-registry-")
    s = Server(
        data,
        "--workers", "2",
        "--insecure-registry", registry.host,
        "--docker-config", registry.docker_config,
        "--registry-secrets", registry.secrets,
        "--max-image-mib", "1",
    ).start()
    yield s
    s.stop()
    shutil.rmtree(data, ignore_errors=True)


def push(registry, path, ref):
    out = subprocess.run(
        [SKIFF, "push", path, f"{registry.host}/{ref}",
         "--insecure-registry", registry.host, "--docker-config", registry.docker_config],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    m = re.fullmatch(rf"{re.escape(registry.host)}/[a-z0-9/._-]+@(sha256:[0-9a-f]{{64}})\n", out.stdout)
    assert m, out.stdout
    return m.group(1)


def register(ecs, image, **extra):
    family = uniq("reg")
    container = {"name": "app", "image": image, "memory": 64, **extra}
    ecs.register_task_definition(family=family, containerDefinitions=[container])
    return family


def tasks_of(ecs, **kw):
    arns = ecs.list_tasks(**kw)["taskArns"]
    return ecs.describe_tasks(tasks=arns)["tasks"] if arns else []


def stopped(ecs, arn):
    def done():
        t = ecs.describe_tasks(tasks=[arn])["tasks"][0]
        return t if t["lastStatus"] == "STOPPED" else None

    return wait_for(f"task {arn} to stop", done)


def test_a_service_runs_a_pushed_image_and_keeps_its_digest_when_the_tag_moves(node, registry):
    ecs = node.client()
    d1 = push(registry, HELLO, "hello:v1")
    family = register(ecs, f"{registry.host}/hello:v1")
    name = uniq("svc")
    ecs.create_service(serviceName=name, taskDefinition=family, desiredCount=1)

    def running(n, digest):
        ts = [t for t in tasks_of(ecs, serviceName=name) if t["lastStatus"] == "RUNNING"]
        ok = len(ts) == n and all(t["containers"][0].get("imageDigest") == digest for t in ts)
        return ts if ok else None

    wait_for("the service's task to run digest v1", lambda: running(1, d1))
    host, port = node.ingress
    req = urllib.request.Request(f"http://{host}:{port}/", headers={"Host": f"{name}.localhost"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200

    # The tag moves; the running deployment keeps its digest, even for the
    # tasks it starts after the move.
    v2 = variant(HELLO, "v2")
    d2 = push(registry, v2, "hello:v1")
    os.unlink(v2)
    assert d2 != d1
    ecs.update_service(service=name, desiredCount=2)
    wait_for("two tasks, both still on the first digest", lambda: running(2, d1))

    # A new deployment takes what the tag names now.
    ecs.update_service(service=name, forceNewDeployment=True)
    ts = wait_for("two tasks on the new digest", lambda: running(2, d2), timeout=90)
    assert all(t["containers"][0]["image"] == f"{registry.host}/hello:v1" for t in ts)
    ecs.update_service(service=name, desiredCount=0)
    ecs.delete_service(service=name)


def test_each_pull_failure_is_named(node, registry):
    ecs = node.client()
    ref = f"{registry.host}"
    push(registry, ECHO, "echo:v1")

    def reason_of(image, **extra):
        family = register(ecs, image, **extra)
        arn = ecs.run_task(taskDefinition=family)["tasks"][0]["taskArn"]
        t = stopped(ecs, arn)
        assert t["stopCode"] == "TaskFailedToStart", t
        assert t["stoppedReason"].startswith("CannotPullContainerError"), t["stoppedReason"]
        assert t["containers"][0]["reason"] == t["stoppedReason"]
        return t["stoppedReason"]

    why = reason_of(f"{ref}/echo:missing")
    assert f"{ref}/echo:missing: not found" in why, why
    why = reason_of(f"{ref}/echo@sha256:{'0' * 64}")
    assert "not found" in why, why
    why = reason_of(f"{ref}/nosuchrepo:v1")
    assert "not found" in why, why

    # Credentials the registry refuses.
    why = reason_of(f"{ref}/echo:v1", repositoryCredentials={"credentialsParameter": "wrong"})
    assert "unauthorized" in why, why
    why = reason_of(f"{ref}/echo:v1", repositoryCredentials={
        "credentialsParameter": "arn:aws:secretsmanager:us-west-2:000000000000:secret:absent"})
    assert "credentials" in why and "absent" in why, why

    # An image that is not a wasm artifact (a container image's layer).
    config = registry.upload("notwasm", b"{}")
    layer = b"\x1f\x8b" + b"not wasm" * 10
    layer_digest = registry.upload("notwasm", layer)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest, "size": len(layer)}],
    }
    registry.request("PUT", "/v2/notwasm/manifests/v1", data=json.dumps(manifest).encode(),
                     headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    why = reason_of(f"{ref}/notwasm:v1")
    assert "not a wasm artifact" in why and "tar+gzip" in why, why

    # Bytes that are not what their digest says (the registry's copy was
    # damaged on disk).
    damaged = variant(ECHO, uniq("damaged"))
    push(registry, damaged, "damaged:v1")
    os.unlink(damaged)
    layer = registry.manifest("damaged", "v1")["layers"][0]
    path = registry.blob_file(layer["digest"])
    with open(path, "r+b") as f:
        f.seek(100)
        f.write(b"\xff" * 16)
    why = reason_of(f"{ref}/damaged:v1")
    assert "digest mismatch" in why, why

    # Larger than this node's bound (--max-image-mib 1).
    big = variant(ECHO, "big", size=1_200_000)
    push(registry, big, "big:v1")
    os.unlink(big)
    why = reason_of(f"{ref}/big:v1")
    assert "too large" in why and "--max-image-mib" in why, why


def test_credentials_from_a_secret_and_pulls_are_shared(node, registry):
    ecs = node.client()
    image = variant(ECHO, uniq("burst"))
    digest = push(registry, image, "burst:v1")
    os.unlink(image)

    def pulls():
        with urllib.request.urlopen(node.endpoint + "/metrics", timeout=10) as r:
            text = r.read().decode()
        return int(re.search(r"^skiff_image_pulls_total (\d+)$", text, re.M).group(1))

    before = pulls()
    family = register(ecs, f"{registry.host}/burst:v1",
                      repositoryCredentials={"credentialsParameter": "good"})
    arns = [t["taskArn"] for t in ecs.run_task(taskDefinition=family, count=10)["tasks"]]
    assert len(arns) == 10
    for arn in arns:
        t = stopped(ecs, arn)
        assert t["containers"][0]["exitCode"] == 0, t
        assert t["containers"][0]["imageDigest"] == digest, t
    # Ten tasks started at once; the layer came from the registry once.
    assert pulls() - before == 1


def test_registration_refuses_bad_references(node):
    ecs = node.client()
    with pytest.raises(ecs.exceptions.ClientException) as e:
        register(ecs, "registry.example/UPPER:v1")
    assert "containerDefinitions[0].image" in str(e.value)
    assert "not a valid OCI reference" in str(e.value)
    with pytest.raises(ecs.exceptions.ClientException) as e:
        register(ecs, "/srv/app.wasm", repositoryCredentials={"credentialsParameter": "good"})
    assert "repositoryCredentials.credentialsParameter" in str(e.value)


def test_exec_runs_a_reference(registry):
    push(registry, ECHO, "echo:exec")
    cache = tempfile.mkdtemp(prefix="skiff-exec-cache-")
    try:
        out = subprocess.run(
            [SKIFF, "exec", "--cache-dir", cache, "--insecure-registry", registry.host,
             "--docker-config", registry.docker_config, f"{registry.host}/echo:exec", "--", "hi"],
            capture_output=True, text=True, timeout=120,
        )
        assert out.returncode == 0, out.stderr
        assert "argv[1]=hi" in out.stdout, out.stdout
        out = subprocess.run(
            [SKIFF, "exec", "--cache-dir", cache, "--insecure-registry", registry.host,
             f"{registry.host}/echo:exec"],
            capture_output=True, text=True, timeout=120,
            env={**os.environ, "DOCKER_CONFIG": cache},
        )
        assert out.returncode == 125, out
        assert "unauthorized" in out.stderr, out.stderr
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def test_failed_pulls_trip_the_circuit_breaker_and_the_rollback_keeps_its_digest(node, registry):
    ecs = node.client()
    d1 = push(registry, HELLO, "breaker:v1")
    good = register(ecs, f"{registry.host}/breaker:v1")
    bad = register(ecs, f"{registry.host}/breaker:never-pushed")
    name = uniq("breaker")
    ecs.create_service(
        serviceName=name, taskDefinition=good, desiredCount=2,
        deploymentConfiguration={"deploymentCircuitBreaker": {"enable": True, "rollback": True}},
    )

    def on(digest, family):
        ts = [t for t in tasks_of(ecs, serviceName=name)
              if t["lastStatus"] == "RUNNING" and t["desiredStatus"] == "RUNNING"]
        ok = len(ts) == 2 and all(
            t["containers"][0].get("imageDigest") == digest and f"/{family}:" in t["taskDefinitionArn"]
            for t in ts)
        return ts if ok else None

    wait_for("two tasks on v1", lambda: on(d1, good))
    # The breaker rolls back to the last deployment that completed.
    wait_for("the first deployment to complete", lambda: ecs.describe_services(services=[name])[
        "services"][0]["deployments"][0]["rolloutState"] == "COMPLETED")
    # The tag moves before the failing deployment: the rollback must go back
    # to what ran (d1), not to what the tag names now.
    moved = variant(HELLO, "moved")
    d2 = push(registry, moved, "breaker:v1")
    os.unlink(moved)
    assert d2 != d1
    ecs.update_service(service=name, taskDefinition=bad)

    def rolled_back():
        svc = ecs.describe_services(services=[name])["services"][0]
        msgs = [e["message"] for e in svc["events"]]
        return any("rolling back to deployment" in m for m in msgs) and svc

    wait_for("the circuit breaker's rollback", rolled_back, timeout=90)
    before = wait_for("two tasks on v1's digest again", lambda: on(d1, good), timeout=60)
    # A task the rollback deployment starts now runs what ran before, too.
    ecs.stop_task(task=before[0]["taskArn"], reason="replace me")

    def replaced():
        ts = on(d1, good)
        return ts and before[0]["taskArn"] not in [t["taskArn"] for t in ts] and ts

    after = wait_for("a replacement on v1's digest", replaced, timeout=60)
    primary = ecs.describe_services(services=[name])["services"][0]["deployments"][0]["id"]
    assert any(t.get("startedBy") == primary for t in after), (primary, after)
    stopped_bad = [t for t in tasks_of(ecs, serviceName=name, desiredStatus="STOPPED")
                   if f"/{bad}:" in t["taskDefinitionArn"]]
    # (The rollback may stop a last one before its pull fails.)
    assert any(
        t["stoppedReason"].startswith("CannotPullContainerError") and "not found" in t["stoppedReason"]
        for t in stopped_bad), [t["stoppedReason"] for t in stopped_bad]
    ecs.update_service(service=name, desiredCount=0)
    ecs.delete_service(service=name)


def test_credentials_from_a_docker_credential_helper(registry):
    """A docker config whose credHelpers names a helper for the registry:
    the server runs docker-credential-NAME get (found on its PATH), as
    docker does; a helper that fails is named in the task's reason."""
    work = tempfile.mkdtemp(prefix="skiff-cred-helper-")
    bin_dir = os.path.join(work, "bin")
    os.makedirs(bin_dir)
    asked = os.path.join(work, "asked")
    helper = os.path.join(bin_dir, "docker-credential-skifftest")
    with open(helper, "w") as f:
        f.write(
            "#!/bin/sh\n"
            f'[ "$1" = get ] || exit 2\n'
            f"read server; echo \"$server\" >> {asked}\n"
            f"printf '{{\"ServerURL\": \"%s\", \"Username\": \"{USER}\", \"Secret\": \"{PASSWORD}\"}}' \"$server\"\n"
        )
    broken = os.path.join(bin_dir, "docker-credential-broken")
    with open(broken, "w") as f:
        f.write("#!/bin/sh\necho 'the keychain is locked' >&2\nexit 3\n")
    for p in (helper, broken):
        os.chmod(p, 0o755)
    config = os.path.join(work, "config.json")
    with open(config, "w") as f:
        json.dump({"credHelpers": {registry.host: "skifftest"}}, f)
    image = variant(ECHO, uniq("helper"))
    digest = push(registry, image, "helped:v1")
    os.unlink(image)
    data = tempfile.mkdtemp(prefix="skiff-compat-helper-")
    env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ["PATH"])
    s = Server(data, "--insecure-registry", registry.host, "--docker-config", config, env=env).start()
    try:
        ecs = s.client()
        family = register(ecs, f"{registry.host}/helped:v1")
        t = stopped(ecs, ecs.run_task(taskDefinition=family)["tasks"][0]["taskArn"])
        assert t["containers"][0]["exitCode"] == 0, t
        assert t["containers"][0]["imageDigest"] == digest
        with open(asked) as f:
            assert registry.host in f.read().split()
        # A helper that fails: the task says which, and why.
        with open(config, "w") as f:
            json.dump({"credsStore": "broken"}, f)
        family = register(ecs, f"{registry.host}/helped:v1")
        t = stopped(ecs, ecs.run_task(taskDefinition=family)["tasks"][0]["taskArn"])
        reason = t["containers"][0].get("reason", "") + t.get("stoppedReason", "")
        assert "docker-credential-broken" in reason and "the keychain is locked" in reason, t
    finally:
        s.stop()
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
