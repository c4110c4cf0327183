"""`skiff server --auth`: SigV4 signatures checked as AWS checks them, with
the real boto3 and aws-cli, and IAM policies per key."""

import datetime
import json
import os
import shutil
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request
from unittest import mock

import boto3
import botocore
import pytest
from botocore import UNSIGNED
from botocore.config import Config

from conftest import REGION, ROOT, SKIFF, Server, auth_server, uniq

ADMIN = ("AKIASKIFFADMIN000001", "admin-secret-key-0123456789abcdefghij")
READER = ("AKIASKIFFREADER00001", "reader-secret-key-0123456789abcdefghi")
PROD = ("AKIASKIFFPRODONLY001", "prod-secret-key-0123456789abcdefghijk")
WATCHER = ("AKIASKIFFSCALEWATCH1", "watch-secret-key-0123456789abcdefghij")

KEYS = {
    "keys": [
        {
            "access_key_id": ADMIN[0],
            "secret_access_key": ADMIN[1],
            "name": "admin",
            "policy": {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": ["ecs:*", "logs:*", "skiff:*"], "Resource": "*"}],
            },
        },
        {
            "access_key_id": READER[0],
            "secret_access_key": READER[1],
            "name": "reader",
            "policy": {
                "Statement": [{"Effect": "Allow", "Action": ["ecs:Describe*", "ecs:List*"], "Resource": "*"}]
            },
        },
        {
            "access_key_id": PROD[0],
            "secret_access_key": PROD[1],
            "name": "prod-deployer",
            "policy": {
                "Statement": [
                    {"Effect": "Allow", "Action": "ecs:*", "Resource": "arn:aws:ecs:*:*:cluster/prod-*"},
                    {"Effect": "Allow", "Action": "ecs:RegisterTaskDefinition", "Resource": "*"},
                    {"Effect": "Deny", "Action": "ecs:DeleteCluster", "Resource": "*"},
                ]
            },
        },
        {
            "access_key_id": WATCHER[0],
            "secret_access_key": WATCHER[1],
            "name": "scale-watcher",
            "policy": {
                "Statement": [{"Effect": "Allow", "Action": "application-autoscaling:Describe*", "Resource": "*"}]
            },
        },
    ]
}


@pytest.fixture(scope="module")
def authed():
    yield from auth_server(KEYS, "skiff-auth-")


def client(server, key, service="ecs", **config):
    return boto3.client(
        service,
        endpoint_url=server.endpoint,
        region_name=REGION,
        aws_access_key_id=key[0],
        aws_secret_access_key=key[1],
        config=Config(retries={"max_attempts": 1}, **config),
    )


def error_of(call):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call()
    return e.value.response


def test_the_right_key_works_and_signs_the_region(authed):
    ecs = client(authed, ADMIN)
    name = uniq("signed")
    arn = ecs.create_cluster(clusterName=name)["cluster"]["clusterArn"]
    assert arn == f"arn:aws:ecs:{REGION}:000000000000:cluster/{name}"
    assert arn in ecs.list_clusters()["clusterArns"]
    logs = client(authed, ADMIN, "logs")
    assert "logGroups" in logs.describe_log_groups()
    # The signer is who created a service, and the principal of its own
    # account settings.
    family = uniq("signed")
    ecs.register_task_definition(family=family, containerDefinitions=[
        {"name": "web", "image": os.path.join(ROOT, "guests", "dist", "hello-http.wasm"), "memory": 32}])
    svc = ecs.create_service(cluster=name, serviceName="by", taskDefinition=family, desiredCount=0)["service"]
    assert svc["createdBy"] == "arn:aws:iam::000000000000:user/admin"
    ecs.delete_service(cluster=name, service="by")
    out = ecs.put_account_setting(name="awsvpcTrunking", value="enabled")["setting"]
    assert out["principalArn"] == "arn:aws:iam::000000000000:user/admin"
    (s,) = ecs.list_account_settings(name="awsvpcTrunking", effectiveSettings=True)["settings"]
    assert (s["value"], s["principalArn"]) == ("enabled", "arn:aws:iam::000000000000:user/admin")


def test_a_wrong_secret_is_an_invalid_signature(authed):
    r = error_of(lambda: client(authed, (ADMIN[0], "wrong-secret-key-0123456789abcdefgh")).list_clusters())
    assert r["Error"]["Code"] == "InvalidSignatureException"
    assert "does not match" in r["Error"]["Message"]
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_an_unknown_key_is_unrecognized(authed):
    r = error_of(lambda: client(authed, ("AKIANOTAKEYOFSKIFF01", ADMIN[1])).list_clusters())
    assert r["Error"]["Code"] == "UnrecognizedClientException"
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_an_expired_timestamp_is_refused(authed):
    ecs = client(authed, ADMIN)
    late = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=20)
    with mock.patch("botocore.auth.get_current_datetime", return_value=late):
        r = error_of(ecs.list_clusters)
    assert r["Error"]["Code"] == "InvalidSignatureException"
    assert r["Error"]["Message"].startswith("Signature expired")
    # Within the 15 minutes of skew, it is accepted.
    near = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=10)
    with mock.patch("botocore.auth.get_current_datetime", return_value=near):
        assert "clusterArns" in ecs.list_clusters()


def test_a_body_changed_after_signing_is_refused(authed):
    ecs = client(authed, ADMIN)
    name = uniq("tampered")

    def tamper(request, **_):
        body = request.body.decode() if isinstance(request.body, bytes) else request.body
        body = body.replace(name, name + "-x")
        request.body = body.encode()
        request.headers["Content-Length"] = str(len(request.body))

    ecs.meta.events.register("before-send.ecs.CreateCluster", tamper)
    r = error_of(lambda: ecs.create_cluster(clusterName=name))
    assert r["Error"]["Code"] == "InvalidSignatureException"
    admin = client(authed, ADMIN)
    arns = admin.list_clusters()["clusterArns"]
    assert not [a for a in arns if a.endswith(name) or a.endswith(name + "-x")]


def test_a_missing_signature_is_a_missing_token(authed):
    r = error_of(lambda: client(authed, ADMIN, signature_version=UNSIGNED).list_clusters())
    assert r["Error"]["Code"] == "MissingAuthenticationTokenException"
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 403
    # And by hand, with no headers at all.
    req = urllib.request.Request(
        authed.endpoint + "/",
        data=b"{}",
        headers={"X-Amz-Target": "AmazonEC2ContainerServiceV20141113.ListClusters"},
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 403
    assert json.loads(e.value.read())["__type"] == "MissingAuthenticationTokenException"


def test_policies_allow_and_deny_by_action_and_cluster(authed):
    admin, reader, prod = client(authed, ADMIN), client(authed, READER), client(authed, PROD)
    assert "clusterArns" in reader.list_clusters()
    r = error_of(lambda: reader.create_cluster(clusterName=uniq("nope")))
    assert r["Error"]["Code"] == "AccessDeniedException"
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 403
    msg = r["Error"]["Message"]
    assert "user/reader is not authorized to perform: ecs:CreateCluster" in msg, msg

    mine, theirs = uniq("prod"), uniq("dev")
    prod.create_cluster(clusterName=mine)
    r = error_of(lambda: prod.create_cluster(clusterName=theirs))
    assert r["Error"]["Code"] == "AccessDeniedException"
    assert f"cluster/{theirs}" in r["Error"]["Message"]
    # Allowed on prod-*, but an explicit Deny wins.
    r = error_of(lambda: prod.delete_cluster(cluster=mine))
    assert r["Error"]["Code"] == "AccessDeniedException"
    assert "explicit deny" in r["Error"]["Message"]
    # Reading a cluster that is not its own is refused; its own is not.
    r = error_of(lambda: prod.describe_clusters(clusters=[mine, "default"]))
    assert "cluster/default" in r["Error"]["Message"]
    assert prod.describe_clusters(clusters=[mine])["clusters"][0]["clusterName"] == mine
    # An ARN names its own cluster: a task elsewhere is out of reach even
    # when the request says `cluster` is its own.
    elsewhere = "arn:aws:ecs:us-west-2:000000000000:task/default/0123456789abcdef0123456789abcdef"
    r = error_of(lambda: prod.stop_task(cluster=mine, task=elsewhere))
    assert r["Error"]["Code"] == "AccessDeniedException"
    assert "cluster/default" in r["Error"]["Message"]
    # Nothing was lost or made by the refused calls.
    names = [a.rsplit("/", 1)[1] for a in admin.list_clusters()["clusterArns"]]
    assert mine in names and theirs not in names
    admin.delete_cluster(cluster=mine)


def aws(server, key, *args):
    env = dict(os.environ)
    env.update(
        AWS_ACCESS_KEY_ID=key[0],
        AWS_SECRET_ACCESS_KEY=key[1],
        AWS_DEFAULT_REGION=REGION,
        AWS_MAX_ATTEMPTS="1",
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
    )
    exe = os.path.join(ROOT, ".venv", "bin", "aws")
    return subprocess.run(
        [exe, "--endpoint-url", server.endpoint, "--output", "json", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_aws_cli_signs_and_is_refused_with_a_wrong_secret(authed):
    ok = aws(authed, ADMIN, "ecs", "list-clusters")
    assert ok.returncode == 0, ok.stderr
    assert "clusterArns" in json.loads(ok.stdout)
    bad = aws(authed, (ADMIN[0], "wrong-secret-key-0123456789abcdefgh"), "ecs", "list-clusters")
    assert bad.returncode != 0
    assert "InvalidSignatureException" in bad.stderr, bad.stderr
    denied = aws(authed, READER, "ecs", "create-cluster", "--cluster-name", uniq("cli"))
    assert denied.returncode != 0
    assert "AccessDeniedException" in denied.stderr, denied.stderr


def test_the_skiff_client_signs_with_the_environments_key(authed):
    def skiff(key, *args):
        env = dict(os.environ, SKIFF_ENDPOINT=authed.endpoint, AWS_REGION=REGION)
        env.pop("AWS_ACCESS_KEY_ID", None)
        env.pop("AWS_SECRET_ACCESS_KEY", None)
        if key:
            env.update(AWS_ACCESS_KEY_ID=key[0], AWS_SECRET_ACCESS_KEY=key[1])
        return subprocess.run([SKIFF, *args], env=env, capture_output=True, text=True, timeout=60)

    ok = skiff(ADMIN, "services")
    assert ok.returncode == 0, ok.stderr
    unsigned = skiff(None, "services")
    assert unsigned.returncode != 0
    assert "MissingAuthenticationTokenException" in unsigned.stderr, unsigned.stderr


def get(url, headers=None):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def signed_get(url, key, service="ecs"):
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    req = AWSRequest(method="GET", url=url)
    SigV4Auth(Credentials(*key), service, REGION).add_auth(req)
    return get(url, dict(req.headers))


def non_loopback_address():
    """An address of this machine that is not loopback (no packet is sent)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("10.255.255.255", 1))
        ip = s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()
    return None if ip.startswith("127.") else ip


def test_metrics_need_a_key_except_from_loopback(authed):
    status, text = get(authed.endpoint + "/metrics")
    assert status == 200 and "skiff_" in text
    ip = non_loopback_address()
    if ip is None:
        pytest.skip("this machine has no address but loopback")
    data = tempfile.mkdtemp(prefix="skiff-auth-remote-")
    keys = os.path.join(data, "keys.json")
    with open(keys, "w") as f:
        json.dump(KEYS, f)
    s = Server(os.path.join(data, "data"), "--auth", keys)
    try:
        # Listen on all addresses, call from this machine's own address.
        s.start(api="0.0.0.0:0")
        port = int(s.endpoint.rsplit(":", 1)[1])
        url = f"http://{ip}:{port}/metrics"
        status, body = get(url)
        assert status == 403, body
        assert json.loads(body)["__type"] == "MissingAuthenticationTokenException"
        status, body = signed_get(url, READER)
        assert status == 403 and "skiff:GetMetrics" in body, body
        status, body = signed_get(url, ADMIN)
        assert status == 200 and "skiff_" in body
    finally:
        s.stop()
        shutil.rmtree(data, ignore_errors=True)


def test_task_logs_over_http_need_a_key(authed):
    status, body = get(authed.endpoint + "/logs/default/0123abcd")
    assert status == 403 and "MissingAuthenticationToken" in body
    status, body = signed_get(authed.endpoint + "/logs/default/0123abcd", READER)
    assert status == 403 and "logs:GetLogEvents" in body
    status, _ = signed_get(authed.endpoint + "/logs/default/0123abcd", ADMIN)
    assert status == 404


def run_server(*args):
    d = tempfile.mkdtemp(prefix="skiff-bind-")
    try:
        return subprocess.run(
            [SKIFF, "server", "--data-dir", d, "--ingress", "127.0.0.1:0", *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_a_reachable_api_refuses_to_start_without_auth():
    r = run_server("--api", "0.0.0.0:0")
    assert r.returncode != 0
    assert "--auth" in r.stderr and "--insecure-no-auth" in r.stderr, r.stderr
    assert "API on" not in r.stderr


def test_insecure_no_auth_is_the_explicit_way_to_serve_an_open_api():
    d = tempfile.mkdtemp(prefix="skiff-insecure-")
    s = Server(d, "--insecure-no-auth")
    try:
        s.start(api="0.0.0.0:0")
        port = int(s.endpoint.rsplit(":", 1)[1])
        ecs = boto3.client(
            "ecs",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name=REGION,
            config=Config(signature_version=UNSIGNED),
        )
        assert "clusterArns" in ecs.list_clusters()
    finally:
        s.stop()
        shutil.rmtree(d, ignore_errors=True)


def test_a_bad_keys_file_is_named_and_nothing_starts(tmp_path):
    bad = tmp_path / "keys.json"
    bad.write_text(json.dumps({"keys": [{"access_key_id": "AKIASHORT", "secret_access_key": "x" * 20, "policy": {}}]}))
    r = run_server("--api", "127.0.0.1:0", "--auth", str(bad))
    assert r.returncode != 0
    assert str(bad) in r.stderr and "keys[0].access_key_id" in r.stderr, r.stderr
    bad.write_text("{not json")
    r = run_server("--api", "127.0.0.1:0", "--auth", str(bad))
    assert r.returncode != 0 and "not valid JSON" in r.stderr, r.stderr


def test_with_auth_tasks_name_host_files_only_under_the_host_roots(tmp_path):
    root = tmp_path / "apps"
    root.mkdir()
    shutil.copy(os.path.join(ROOT, "guests", "dist", "echo.wasm"), root / "echo.wasm")
    # Inside by name, outside by where it leads.
    os.symlink(os.path.join(ROOT, "guests", "dist", "echo.wasm"), root / "planted.wasm")
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps(KEYS))
    s = Server(str(tmp_path / "data"), "--auth", str(keys), "--host-root", str(root)).start()
    try:
        ecs = client(s, ADMIN)

        def register(image, volumes=()):
            return ecs.register_task_definition(
                family=uniq("roots"),
                containerDefinitions=[{"name": "main", "image": image, "memory": 16}],
                volumes=list(volumes),
            )["taskDefinition"]["taskDefinitionArn"]

        for image, field in (
            ("/etc/passwd", "containerDefinitions[0].image"),
            (str(root / ".." / "keys.json"), "containerDefinitions[0].image"),
        ):
            r = error_of(lambda: register(image))
            assert r["Error"]["Code"] == "ClientException"
            assert field in r["Error"]["Message"] and "--host-root" in r["Error"]["Message"], r
        r = error_of(lambda: register(str(root / "echo.wasm"), [{"name": "v", "host": {"sourcePath": "/etc"}}]))
        assert "volumes[0].host.sourcePath" in r["Error"]["Message"]

        def run(td):
            arn = ecs.run_task(taskDefinition=td)["tasks"][0]["taskArn"]
            ecs.get_waiter("tasks_stopped").wait(tasks=[arn], WaiterConfig={"Delay": 1, "MaxAttempts": 60})
            return ecs.describe_tasks(tasks=[arn])["tasks"][0]

        ok = run(register(str(root / "echo.wasm")))
        assert ok["containers"][0]["exitCode"] == 0
        # A link that leads out is refused when it is registered...
        r = error_of(lambda: register(str(root / "planted.wasm")))
        assert "containerDefinitions[0].image" in r["Error"]["Message"], r
        assert "outside the directories" in r["Error"]["Message"], r
        # ... and when it is planted after the registration, when the
        # task starts.
        late = register(str(root / "late.wasm"))
        os.symlink(os.path.join(ROOT, "guests", "dist", "echo.wasm"), root / "late.wasm")
        planted = run(late)
        assert planted["stopCode"] == "TaskFailedToStart"
        assert "outside the directories" in planted["stoppedReason"], planted["stoppedReason"]
    finally:
        s.stop()


def test_autoscaling_calls_are_signed_and_checked_against_the_policy(authed):
    """Application Auto Scaling's calls are signed for its own signing name
    and allowed or refused by `application-autoscaling:ACTION`."""
    watcher = client(authed, WATCHER, "application-autoscaling")
    assert watcher.describe_scalable_targets(ServiceNamespace="ecs")["ScalableTargets"] == []
    with pytest.raises(botocore.exceptions.ClientError) as e:
        watcher.register_scalable_target(ServiceNamespace="ecs", ResourceId="service/default/web",
                                         ScalableDimension="ecs:service:DesiredCount", MinCapacity=0, MaxCapacity=1)
    err = e.value.response["Error"]
    assert err["Code"] == "AccessDeniedException"
    assert "application-autoscaling:RegisterScalableTarget" in err["Message"]
    # A key allowed ecs:* only is not allowed Application Auto Scaling.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client(authed, ADMIN, "application-autoscaling").describe_scaling_policies(ServiceNamespace="ecs")
    assert "application-autoscaling:DescribeScalingPolicies" in e.value.response["Error"]["Message"]
