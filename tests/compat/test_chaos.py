"""Chaos and crash tests for services. Traffic goes only to 127.0.0.1; each
test stops by itself, bounded in requests and time.

- Chaos: a service under steady load from a local load generator while
  its tasks are stopped at random, one at a time (the next only once the
  service is back at its count, so however slow the machine there are
  always tasks to route to), and its guests trap. Stopping tasks drain the
  requests in flight on them, so no request may fail; a trap costs exactly
  its own request; the service is back at its count at the end. The test
  is bounded by counts (stops, traps, requests), not by a window of time.
- Crash: services are created, scaled and updated while the server is
  `kill -9`ed at random points; after each restart every acknowledged
  change is there and the services converge to it.
"""

import http.client
import os
import random
import shutil
import tempfile
import threading
import time

import botocore
from botocore.config import Config

from conftest import ROOT, Server, uniq, wait_for

HELLO = os.path.join(ROOT, "guests", "dist", "hello-http.wasm")

CHAOS_STOPS = 10
CHAOS_TRAPS = 10
MIN_REQUESTS = 2_000
LOAD_CONNECTIONS = 8
MAX_REQUESTS = 200_000


class Load:
    """Keep-alive GETs from LOAD_CONNECTIONS threads until stopped."""

    def __init__(self, ingress, host):
        self.ingress, self.host = ingress, host
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.served = 0
        self.failed = []
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(LOAD_CONNECTIONS)]

    def run(self):
        conn = None
        while not self.stop.is_set():
            with self.lock:
                if self.served + len(self.failed) >= MAX_REQUESTS:
                    return
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(*self.ingress, timeout=30)
                conn.request("GET", "/", headers={"Host": self.host})
                resp = conn.getresponse()
                body = resp.read()
                ok = resp.status == 200 and body.startswith(b"hello from skiff")
                outcome = None if ok else (resp.status, body[:200])
            except (OSError, http.client.HTTPException) as e:
                conn = None
                outcome = ("connection", repr(e))
            with self.lock:
                if outcome is None:
                    self.served += 1
                else:
                    self.failed.append(outcome)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


def trap(ingress, host):
    conn = http.client.HTTPConnection(*ingress, timeout=30)
    try:
        conn.request("GET", "/trap", headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_a_service_under_load_rides_out_stopped_and_trapping_tasks(fresh_dir):
    s = Server(fresh_dir, "--workers", "2").start()
    try:
        ecs = s.client()
        td = ecs.register_task_definition(
            family="chaos", containerDefinitions=[{"name": "web", "image": HELLO, "memory": 32}]
        )["taskDefinition"]["taskDefinitionArn"]
        ecs.create_service(serviceName="web", taskDefinition=td, desiredCount=4)
        ecs.get_waiter("services_stable").wait(services=["web"], WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        host = "web.default.localhost"
        rng = random.Random(7)
        stops, traps = 0, []

        def running():
            arns = ecs.list_tasks(serviceName="web", desiredStatus="RUNNING")["taskArns"]
            tasks = ecs.describe_tasks(tasks=arns)["tasks"] if arns else []
            up = [t["taskArn"] for t in tasks if t["lastStatus"] == "RUNNING"]
            return up if len(up) == 4 else None

        with Load(s.ingress, host) as load:
            while stops < CHAOS_STOPS or len(traps) < CHAOS_TRAPS:
                if stops < CHAOS_STOPS and (len(traps) >= CHAOS_TRAPS or rng.random() < 0.5):
                    # One task at a time: the previous one's replacement is
                    # RUNNING (and so routable) before the next is stopped.
                    victim = rng.choice(wait_for("4 RUNNING tasks", running))
                    ecs.stop_task(task=victim, reason="chaos")
                    stops += 1
                else:
                    traps.append(trap(s.ingress, host))
            wait_for(f"{MIN_REQUESTS} requests through the chaos", lambda: load.served + len(load.failed) >= MIN_REQUESTS)
        served, failed = load.served, load.failed
        print(f"\nchaos: {served} requests served, {len(failed)} failed, {stops} tasks stopped, {len(traps)} traps")
        # Each trap cost its own request, with the reason.
        for status, body in traps:
            assert status == 500 and b"trap" in body.lower(), (status, body)
        # Stopped tasks drain the requests in flight on them: nothing else fails.
        assert failed == [], failed[:10]
        # And the service is back at its count.
        ecs.get_waiter("services_stable").wait(services=["web"], WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        svc = ecs.describe_services(services=["web"])["services"][0]
        assert (svc["runningCount"], svc["desiredCount"]) == (4, 4)
        running = ecs.list_tasks(serviceName="web", desiredStatus="RUNNING")["taskArns"]
        assert len(running) == 4
    finally:
        s.stop()


CRASH_ROUNDS = 6
SERVICES = ["alpha", "beta", "gamma"]


def quick_client(server):
    import boto3

    from conftest import REGION

    return boto3.client(
        "ecs",
        endpoint_url=server.endpoint,
        region_name=REGION,
        aws_access_key_id="AKIDSKIFFTEST",
        aws_secret_access_key="not-checked-here",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10),
    )


def test_service_changes_acknowledged_before_kill_9_survive_and_converge():
    data = tempfile.mkdtemp(prefix="skiff-crash-services-")
    rng = random.Random(11)
    # What each service must be: its last acknowledged (count, revision),
    # or, when a change was in flight at the kill, possibly that one.
    acked = {}
    try:
        for round_no in range(CRASH_ROUNDS):
            s = Server(data, "--workers", "2").start()
            ecs = quick_client(s)
            # The state survived the previous kill (or the round's first start).
            check_and_converge(ecs, acked)
            revs = [
                ecs.register_task_definition(
                    family="crash-svc", containerDefinitions=[{"name": "web", "image": HELLO, "memory": 16}]
                )["taskDefinition"]["revision"]
                for _ in range(2)
            ]
            stop = threading.Event()
            errors = []

            def churn():
                try:
                    changes()
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append(repr(e))

            def changes():
                while not stop.is_set():
                    name = rng.choice(SERVICES)
                    count, rev = rng.randint(0, 3), rng.choice(revs)
                    td = f"crash-svc:{rev}"
                    before = acked.get(name)
                    acked[name] = {"ok": before["ok"] if before else None, "maybe": (count, rev)}
                    try:
                        if before is None or before["ok"] is None:
                            try:
                                ecs.create_service(serviceName=name, taskDefinition=td, desiredCount=count)
                            except botocore.exceptions.ClientError as e:
                                # Created by a call whose answer the kill lost.
                                if "already exists" not in str(e) and "idempotent" not in str(e):
                                    raise
                                ecs.update_service(service=name, taskDefinition=td, desiredCount=count)
                        else:
                            ecs.update_service(service=name, taskDefinition=td, desiredCount=count)
                    except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError):
                        # The kill: this change may or may not have landed.
                        return
                    acked[name] = {"ok": (count, rev), "maybe": None}

            t = threading.Thread(target=churn, daemon=True)
            t.start()
            time.sleep(rng.uniform(0.1, 1.2))
            s.kill9()
            stop.set()
            t.join(timeout=30)
            assert not t.is_alive()
            assert errors == [], f"round {round_no}: {errors}"
        s = Server(data, "--workers", "2").start()
        try:
            check_and_converge(quick_client(s), acked)
        finally:
            s.stop()
        print(f"\ncrash: {CRASH_ROUNDS} kills; services at the end: {acked}")
    finally:
        shutil.rmtree(data, ignore_errors=True)


def check_and_converge(ecs, acked):
    if not acked:
        return
    names = sorted(acked)
    services = {x["serviceName"]: x for x in ecs.describe_services(services=names)["services"]}
    for name, want in acked.items():
        allowed = {want["ok"], want["maybe"]} - {None}
        svc = services.get(name)
        if svc is None:
            assert want["ok"] is None, f"{name} was acknowledged as {want['ok']} but is gone"
            continue
        rev = int(svc["taskDefinition"].rsplit(":", 1)[1])
        got = (svc["desiredCount"], rev)
        assert got in allowed, f"{name}: {got}, acknowledged {want['ok']}, in flight {want['maybe']}"
        # From here on, what is there is what was acknowledged.
        acked[name] = {"ok": got, "maybe": None}

    def converged():
        svcs = ecs.describe_services(services=names)["services"]
        return all(
            x["runningCount"] == x["desiredCount"]
            and len(x["deployments"]) == 1
            and x["deployments"][0]["rolloutState"] == "COMPLETED"
            for x in svcs
        ) and svcs

    wait_for("the services to converge to what was acknowledged", converged, timeout=60)
