"""GET /metrics, read with Prometheus's own text parser, moving as requests,
failures and restarts happen."""

import http.client
import os
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from conftest import ROOT, uniq, wait_for

DIST = os.path.join(ROOT, "guests", "dist")


def scrape(server):
    with urllib.request.urlopen(f"{server.endpoint}/metrics") as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def get(server, host, path):
    ip, port = server.ingress
    c = http.client.HTTPConnection(ip, port, timeout=30)
    c.request("GET", path, headers={"Host": host})
    r = c.getresponse()
    r.read()
    c.close()
    return r.status


def test_counters_move_with_requests_and_restarts(server, ecs):
    family = uniq("metrics")
    td = ecs.register_task_definition(
        family=family,
        containerDefinitions=[{"name": "web", "image": os.path.join(DIST, "hello-http.wasm"), "memory": 32}],
    )["taskDefinition"]["taskDefinitionArn"]
    name = uniq("m")
    ecs.create_service(serviceName=name, taskDefinition=td, desiredCount=2)
    ecs.get_waiter("services_stable").wait(services=[name], WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    svc = {"cluster": "default", "service": name}

    before = scrape(server)
    assert value(before, "skiff_service_desired_tasks", **svc) == 2
    assert value(before, "skiff_service_running_tasks", **svc) == 2
    assert value(before, "skiff_task_starts_total", **svc) == 2
    for _ in range(5):
        assert get(server, f"{name}.localhost", "/") == 200
    assert get(server, f"{name}.localhost", "/trap") == 500
    after = scrape(server)
    assert value(after, "skiff_http_requests_total", code="200", **svc) == 5
    assert value(after, "skiff_http_requests_total", code="500", **svc) == 1
    assert value(after, "skiff_http_request_duration_seconds_count", **svc) == 6
    assert value(after, "skiff_http_request_duration_seconds_bucket", le="+Inf", **svc) == 6
    assert value(after, "skiff_instantiation_seconds_count", **svc) >= 6
    assert value(after, "skiff_guest_fuel_consumed_total", **svc) > 0
    assert value(after, "skiff_guest_peak_memory_bytes", **svc) > 0
    assert value(after, "skiff_pool_capacity") > 0

    # A task whose container exits is a failure the service replaces.
    crash = ecs.register_task_definition(
        family=uniq("crash"),
        containerDefinitions=[
            {"name": "job", "image": os.path.join(DIST, "echo.wasm"), "memory": 16, "command": ["--exit", "1"]}
        ],
    )["taskDefinition"]["taskDefinitionArn"]
    ecs.update_service(service=name, taskDefinition=crash)
    wait_for(
        "restarts to be counted",
        lambda: value(scrape(server), "skiff_service_restarts_total", **svc) >= 2,
        timeout=30,
    )
    stops = scrape(server)
    assert value(stops, "skiff_task_stops_total", cluster="default", stop_code="EssentialContainerExited") >= 2
    ecs.delete_service(service=name, force=True)
