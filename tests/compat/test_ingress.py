"""The ingress: requests routed by Host and hostPort to a service's RUNNING,
healthy tasks, balanced by outstanding requests, isolated per request (a
trap, a timeout and a memory bomb each cost one request, never the task),
shed with 503 when every task is full, with request ids, body limits,
streaming both ways, HTTP/2, task identity in the environment, and
draining when a task stops."""

import concurrent.futures
import http.client
import os
import re
import socket
import subprocess
import time

import pytest

from conftest import ROOT, free_port, uniq, wait_for

DIST = os.path.join(ROOT, "guests", "dist")




def web(**kw):
    c = {"name": "web", "image": os.path.join(DIST, "hello-http.wasm"), "memory": 32}
    c.update(kw)
    return c


def deploy(ecs, containers, count=1, cluster="default", **svc):
    family = uniq("ing")
    td = ecs.register_task_definition(family=family, containerDefinitions=containers)["taskDefinition"]
    name = uniq("svc")
    ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=td["taskDefinitionArn"], desiredCount=count, **svc)
    ecs.get_waiter("services_stable").wait(
        cluster=cluster, services=[name], WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    return name


def request(server, host, path="/", method="GET", body=None, headers=None, port=None, timeout=30):
    ip, default_port = server.ingress
    conn = http.client.HTTPConnection(ip, port or default_port, timeout=timeout)
    h = {"Host": host}
    h.update(headers or {})
    conn.request(method, path, body=body, headers=h)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, dict((k.lower(), v) for k, v in resp.getheaders()), data


def get(server, name, path="/", cluster="default", **kw):
    return request(server, f"{name}.{cluster}.localhost", path, **kw)


def delete(ecs, name, cluster="default"):
    ecs.delete_service(cluster=cluster, service=name, force=True)


def test_routes_by_host_with_request_ids(server, ecs):
    name = deploy(ecs, [web(environment=[{"name": "GREETING", "value": "routed"}])])
    status, headers, body = get(server, name)
    assert (status, body) == (200, b"hello from skiff (routed)\n")
    assert re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"])
    # The default cluster may be left out; a port in Host is ignored.
    ip, port = server.ingress
    status, _, body = request(server, f"{name}.localhost:{port}", "/x")
    assert (status, body) == (200, b"you asked for /x\n")
    # A request id is passed through to the guest and back.
    status, headers, _ = get(server, name, headers={"X-Request-Id": "trace-42"})
    assert headers["x-request-id"] == "trace-42"
    status, _, body = request(server, "nothing-here.default.localhost")
    assert status == 404 and b'no service "nothing-here" in cluster "default"' in body
    status, _, body = request(server, "example.com")
    assert status == 404 and b'no service is routed for host "example.com"' in body
    delete(ecs, name)


def test_guests_see_their_task_identity(server, ecs):
    name = deploy(ecs, [web()])
    task = ecs.describe_tasks(tasks=ecs.list_tasks(serviceName=name)["taskArns"])["tasks"][0]
    task_id = task["taskArn"].split("/")[-1]
    env = lambda k: get(server, name, f"/env/{k}")[2].decode().strip()  # noqa: E731
    assert env("SKIFF_CLUSTER") == "default"
    assert env("SKIFF_SERVICE") == name
    assert env("SKIFF_TASK_ID") == task_id
    assert env("SKIFF_TASK_ARN").endswith(f":task/default/{task_id}")
    assert env("SKIFF_TASK_FAMILY") == task["taskDefinitionArn"].split("/")[-1].split(":")[0]
    assert env("SKIFF_TASK_REVISION") == "1"
    assert env("SKIFF_CONTAINER_NAME") == "web"
    delete(ecs, name)


def test_a_trap_a_timeout_and_a_memory_bomb_cost_one_request_each(server, ecs):
    name = deploy(ecs, [web(memory=32, dockerLabels={"skiff.timeout": "300ms"})])
    tasks_before = ecs.list_tasks(serviceName=name)["taskArns"]

    status, headers, body = get(server, name, "/trap")
    assert status == 500
    rid = headers["x-request-id"]
    assert f"request {rid} failed".encode() in body and b"trap" in body
    assert get(server, name)[0] == 200

    t0 = time.monotonic()
    status, _, body = get(server, name, "/sleep?ms=5000")
    assert status == 504 and b"timed out" in body
    assert time.monotonic() - t0 < 3
    assert get(server, name)[0] == 200

    status, _, body = get(server, name, "/alloc?mib=64")
    assert status == 500 and b"memory limit" in body
    assert get(server, name)[0] == 200

    # The task itself stayed up throughout, and its log says what failed.
    assert ecs.list_tasks(serviceName=name)["taskArns"] == tasks_before
    task = tasks_before[0].split("/")[-1]
    import urllib.request

    log = urllib.request.urlopen(f"{server.endpoint}/logs/default/{task}").read().decode()
    assert f"[skiff] request {rid} to task {task} failed" in log
    delete(ecs, name)


def test_instance_reuse_keeps_state_between_a_tasks_requests_only_when_asked(server, ecs):
    def counts(name, n):
        out = []
        for _ in range(n):
            status, _, body = get(server, name, "/counter")
            assert status == 200, body
            out.append(int(body.split()[1]))
        return out

    fresh = deploy(ecs, [web()])
    assert counts(fresh, 4) == [1, 1, 1, 1]
    reused = deploy(ecs, [web(dockerLabels={"skiff.instance-reuse": "3"})])
    assert counts(reused, 7) == [1, 2, 3, 1, 2, 3, 1]
    # A trap drops the instance: the next request starts over.
    assert get(server, reused, "/counter")[0] == 200
    assert get(server, reused, "/trap")[0] == 500
    assert counts(reused, 2) == [1, 2]
    delete(ecs, fresh)
    delete(ecs, reused)


def test_a_flood_past_every_task_is_shed_with_503_at_once(server, ecs):
    name = deploy(ecs, [web(dockerLabels={"skiff.concurrency": "2"})], count=2)
    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
        t0 = time.monotonic()
        futures = [pool.submit(get, server, name, "/sleep?ms=1500") for _ in range(12)]
        results = [f.result() for f in futures]
    ok = [r for r in results if r[0] == 200]
    shed = [r for r in results if r[0] == 503]
    assert len(ok) == 4, [r[0] for r in results]  # 2 tasks x 2 each
    assert len(shed) == 8
    for status, headers, body in shed:
        assert headers["retry-after"] == "1"
        assert b"concurrency limit" in body
    assert time.monotonic() - t0 < 10
    assert get(server, name)[0] == 200
    delete(ecs, name)


def test_requests_spread_over_tasks(server, ecs):
    import urllib.request

    name = deploy(ecs, [web()], count=2)
    tasks = [a.split("/")[-1] for a in ecs.list_tasks(serviceName=name)["taskArns"]]
    # More requests at once than a task on the accepting worker is
    # preferred for: whichever worker accepts them, both tasks get some.
    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(lambda _: get(server, name, "/sleep?ms=500")[0], range(20)))
    assert statuses == [200] * 20
    for t in tasks:
        log = urllib.request.urlopen(f"{server.endpoint}/logs/default/{t}").read().decode()
        assert "sleeping 500 ms" in log, t
    delete(ecs, name)


def test_unhealthy_tasks_get_no_requests(server, ecs):
    name = deploy(
        ecs,
        [web(healthCheck={"command": ["CMD", "GET /status/500"], "interval": 5, "retries": 1})],
        count=0,
    )
    ecs.update_service(service=name, desiredCount=1, healthCheckGracePeriodSeconds=600)
    wait_for(
        "an UNHEALTHY task",
        lambda: [
            t
            for t in ecs.describe_tasks(tasks=ecs.list_tasks(serviceName=name)["taskArns"] or ["x"])["tasks"]
            if t.get("healthStatus") == "UNHEALTHY"
        ],
    )
    status, headers, body = get(server, name)
    assert status == 503 and b"no RUNNING, healthy task" in body
    assert headers["retry-after"] == "1"
    delete(ecs, name)


def test_body_limit_and_streaming_both_ways(server, ecs):
    name = deploy(ecs, [web(memory=64)])
    big = b"y" * (8 << 20)
    status, _, body = get(server, name, "/count", method="POST", body=big)
    assert (status, body) == (200, b"read 8388608 bytes\n")
    # Past the server's limit (16 MiB by default): refused on its declared
    # length, before any of it is read.
    ip, port = server.ingress
    with socket.create_connection((ip, port), timeout=30) as s:
        s.sendall(
            f"POST /count HTTP/1.1\r\nHost: {name}.localhost\r\nContent-Length: {(16 << 20) + 1}\r\n\r\n".encode()
        )
        head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 413 "), head
    # A streamed response larger than the task's memory.
    status, _, body = get(server, name, "/stream?kib=102400")
    assert status == 200 and len(body) == 100 << 20
    delete(ecs, name)


def test_http2_cleartext(server, ecs):
    name = deploy(ecs, [web()])
    ip, port = server.ingress
    out = subprocess.run(
        ["curl", "-s", "--http2-prior-knowledge", "-w", "\n%{http_version}", "-H", f"Host: {name}.localhost", f"http://{ip}:{port}/"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    assert out == "hello from skiff\n\n2"
    delete(ecs, name)



def test_host_port_opens_a_listener_of_its_own(server, ecs):
    port = free_port()
    name = deploy(ecs, [web(portMappings=[{"containerPort": 8080, "hostPort": port}])])
    status, _, body = request(server, "anything", "/via-port", port=port)
    assert (status, body) == (200, b"you asked for /via-port\n")
    delete(ecs, name)


def test_a_stopping_task_finishes_its_requests_and_takes_no_new_ones(server, ecs):
    import urllib.request

    name = deploy(ecs, [web()])
    task = ecs.list_tasks(serviceName=name)["taskArns"][0].split("/")[-1]
    log = lambda: urllib.request.urlopen(f"{server.endpoint}/logs/default/{task}").read().decode()  # noqa: E731
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        slow = pool.submit(get, server, name, "/sleep?ms=1500")
        # Once the guest says it is sleeping, scale in.
        wait_for("the request to be in flight", lambda: "sleeping 1500 ms" in log(), timeout=10)
        ecs.update_service(service=name, desiredCount=0)
        wait_for(
            "the task to stop taking requests",
            lambda: get(server, name)[0] == 503,
            timeout=10,
        )
        status, _, body = slow.result(timeout=30)
    assert (status, body) == (200, b"slept 1500 ms\n")
    ecs.get_waiter("services_stable").wait(services=[name], WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    delete(ecs, name)
