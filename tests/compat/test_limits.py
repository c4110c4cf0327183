"""Limits on the API itself: body size, JSON depth, header size and open
connections are bounded, each answered with a clear 4xx, and the server
goes on serving."""

import http.client
import json
import shutil
import socket
import tempfile

from conftest import Server, wait_for

TARGET = "AmazonEC2ContainerServiceV20141113."


def post(server, action, body, headers=None):
    host, port = server.endpoint.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    h = {"X-Amz-Target": TARGET + action, "Content-Type": "application/x-amz-json-1.1"}
    h.update(headers or {})
    chunked = h.get("Transfer-Encoding") == "chunked"
    conn.request("POST", "/", body=body, headers=h, encode_chunked=chunked)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, data


def test_a_body_over_the_limit_is_413(server):
    body = b'{"family": "' + b"x" * (1 << 20) + b'"}'
    status, data = post(server, "RegisterTaskDefinition", body)
    assert status == 413
    err = json.loads(data)
    assert err["__type"] == "RequestEntityTooLargeException"
    assert "1048576 bytes" in err["message"]
    # Chunked, without a length up front: the same.
    def chunks():
        for _ in range(20):
            yield b"x" * 65536

    status, data = post(server, "RegisterTaskDefinition", chunks(), {"Transfer-Encoding": "chunked"})
    assert status == 413
    status, _ = post(server, "ListClusters", b"{}")
    assert status == 200


def test_json_nested_too_deep_is_refused_by_name(server):
    deep = b'{"family": "d", "x": ' + b"[" * 33 + b"]" * 33 + b"}"
    status, data = post(server, "RegisterTaskDefinition", deep)
    assert status == 400
    err = json.loads(data)
    assert err["__type"] == "ClientException"
    assert "deeper than 32 levels" in err["message"]
    # Far deeper than any parser's recursion: the same clear answer.
    status, data = post(server, "ListClusters", b"[" * 1_000_000)
    assert status == 400 and "deeper than 32" in json.loads(data)["message"]
    # Brackets inside strings are not nesting.
    status, data = post(server, "ListClusters", json.dumps({"nextToken": "[" * 100}).encode())
    assert "deeper" not in json.loads(data).get("message", "")


def raw(server, data):
    """Sends `data` on a new connection (however much of it the server
    takes) and returns all it answers."""
    host, port = server.endpoint.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    try:
        try:
            s.sendall(data)
        except OSError:
            pass
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
        return answer
    finally:
        s.close()


def test_headers_over_the_limit_are_431(server):
    for padding in (80 * 1024, 1 << 20):
        answer = raw(
            server,
            b"POST / HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"y" * padding + b"\r\nContent-Length: 2\r\n\r\n{}",
        )
        assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
    status, _ = post(server, "ListClusters", b"{}")
    assert status == 200


def test_connections_past_the_limit_are_told_to_retry():
    d = tempfile.mkdtemp(prefix="skiff-conns-")
    s = Server(d, "--api-connections", "4").start()
    host, port = s.endpoint.removeprefix("http://").split(":")
    held = []
    try:
        # Four connections that each made a request and stay open.
        for _ in range(4):
            c = http.client.HTTPConnection(host, int(port), timeout=30)
            c.request("POST", "/", body=b"{}", headers={"X-Amz-Target": TARGET + "ListClusters"})
            assert c.getresponse().read()
            held.append(c)
        extra = socket.create_connection((host, int(port)), timeout=30)
        extra.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        answer = b""
        while chunk := extra.recv(65536):
            answer += chunk
        extra.close()
        head, body = answer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 429"), head
        err = json.loads(body)
        assert err["__type"] == "ThrottlingException"
        assert "4 connections" in err["message"]
        # Once one closes, a new connection is served.
        held.pop().close()

        def served():
            status, _ = post(s, "ListClusters", b"{}")
            return status == 200

        wait_for("a connection to be served after one closed", served, timeout=10)
    finally:
        for c in held:
            c.close()
        s.stop()
        shutil.rmtree(d, ignore_errors=True)


PAGED = [
    ("ListClusters", {}),
    ("ListTaskDefinitions", {}),
    ("ListTaskDefinitionFamilies", {}),
    ("ListTasks", {}),
    ("ListServices", {}),
    ("ListServiceDeployments", {"service": "nope"}),
]


def test_a_multibyte_next_token_is_a_client_error(server):
    """A token is whatever the client sends: multi-byte characters at even
    and odd byte offsets are refused as a 400 naming nextToken, never a
    ServerException."""
    for action, extra in PAGED:
        for token in ["a\u00e9a", "\u00e9", "0\U0001f600", "+1", "zz", "\u0000\u0000"]:
            status, data = post(server, action, json.dumps(dict(extra, nextToken=token)).encode())
            err = json.loads(data)
            assert status == 400, (action, token, status, err)
            assert err["__type"] in ("InvalidParameterException", "ServiceNotFoundException"), (action, err)
    for group_token in ["f/\u00e9", "\u00e9/1", "b/1\U0001f600"]:
        host, port = server.endpoint.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request(
            "POST",
            "/",
            body=json.dumps({"logGroupName": "/nope", "logStreamName": "s", "nextToken": group_token}).encode(),
            headers={"X-Amz-Target": "Logs_20140328.GetLogEvents", "Content-Type": "application/x-amz-json-1.1"},
        )
        r = conn.getresponse()
        assert r.status == 400, (group_token, r.status, r.read())
        conn.close()


def test_a_field_of_the_wrong_type_is_named_by_its_path(server):
    """Requests are decoded into typed shapes: a wrong type is a 400 that
    names the field by its path, whatever client sent it."""
    td = {"family": "typed", "containerDefinitions": [{"name": "main", "image": "guests/dist/echo.wasm", "memory": 16}]}
    status, _ = post(server, "RegisterTaskDefinition", json.dumps(td).encode())
    assert status == 200
    cases = [
        ("RunTask", {"taskDefinition": "typed", "overrides": {"containerOverrides": [{"name": "main", "command": ["ok", 7]}]}},
         "overrides.containerOverrides[0].command[1]"),
        ("RunTask", {"taskDefinition": "typed", "count": "2"}, "count"),
        ("RunTask", {"taskDefinition": 3}, "taskDefinition"),
        ("StopTask", {"task": ["x"]}, "task"),
        ("DescribeTasks", {"tasks": ["a", {"b": 1}]}, "tasks[1]"),
        ("ListTasks", {"family": False}, "family"),
        ("CreateService", {"serviceName": "t", "taskDefinition": "typed", "desiredCount": "2"}, "desiredCount"),
        ("UpdateService", {"service": "t", "deploymentConfiguration": {"maximumPercent": "all"}},
         "deploymentConfiguration.maximumPercent"),
        ("CreateService", {"serviceName": "t", "taskDefinition": "typed", "desiredCount": 1,
                           "placementStrategy": [{"type": 5}]}, "placementStrategy[0].type"),
        ("DescribeServices", {"services": "t"}, "services"),
        ("CreateCluster", {"clusterName": "t", "settings": "x"}, "settings"),
        ("CreateCluster", {"clusterName": "t", "tags": [{"key": 1, "value": "v"}]}, "tags[0].key"),
        ("DescribeClusters", {"clusters": [1]}, "clusters[0]"),
        ("DescribeTaskDefinition", {"taskDefinition": "typed", "include": "TAGS"}, "include"),
        ("ListTaskDefinitions", {"familyPrefix": 1}, "familyPrefix"),
        ("UntagResource", {"resourceArn": "arn:aws:ecs:us-west-2:000000000000:cluster/default", "tagKeys": [True]}, "tagKeys[0]"),
        ("Logs_20140328.GetLogEvents", {"logGroupName": "/g", "logStreamName": "s", "startTime": "yesterday"}, "startTime"),
        ("Logs_20140328.FilterLogEvents", {"logGroupName": "/g", "logStreamNames": ["a", 2]}, "logStreamNames[1]"),
    ]
    for action, body, field in cases:
        headers = {"X-Amz-Target": action} if action.startswith("Logs_") else None
        status, data = post(server, action, json.dumps(body).encode(), headers)
        err = json.loads(data)
        assert status == 400, (action, body, err)
        # Overrides are checked as a whole: InvalidParameterException, as ECS.
        assert err["__type"] in ("ClientException", "InvalidParameterException"), (action, err)
        assert err["message"].startswith(field + ": invalid type"), (action, err)
