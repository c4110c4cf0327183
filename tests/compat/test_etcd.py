"""boto3 and aws-cli against `skiff server --store etcd://...`, with a real
etcd (Debian's etcd-server) on 127.0.0.1: the same API on the other store,
and the state in etcd, not in the server: a second server, on another data
directory, sees what the first one wrote."""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

from conftest import ROOT, Server, free_port, uniq, wait_for

DIST = os.path.join(ROOT, "guests", "dist")



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


def aws(endpoint, *args):
    out = subprocess.run(
        [os.path.join(ROOT, ".venv", "bin", "aws"), "ecs", *args,
         "--endpoint-url", endpoint, "--region", "us-west-2", "--output", "json"],
        env={**os.environ, "AWS_ACCESS_KEY_ID": "AKIDSKIFFTEST", "AWS_SECRET_ACCESS_KEY": "x"},
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_three_nodes_one_state_container_instances_and_draining(etcd):
    store = f"etcd://{etcd}/{uniq('ns')}"
    dirs = [tempfile.mkdtemp() for _ in range(3)]
    nodes = [
        Server(d, "--store", store, "--workers", "1", "--memory", "512",
               "--attribute", f"ecs.availability-zone=z{i}", "--attribute", f"tier={'gold' if i == 0 else 'std'}").start()
        for i, d in enumerate(dirs)
    ]
    try:
        ecs = [n.client() for n in nodes]
        arns = wait_for("3 container instances", lambda: (lambda a: len(a) == 3 and a)(
            ecs[0].list_container_instances()["containerInstanceArns"]))
        # aws-cli against another node sees the same instances.
        assert sorted(aws(nodes[2].endpoint, "list-container-instances")["containerInstanceArns"]) == sorted(arns)
        described = ecs[1].describe_container_instances(containerInstances=arns)["containerInstances"]
        by_zone = {}
        for ci in described:
            attrs = {a["name"]: a.get("value") for a in ci["attributes"]}
            by_zone[attrs["ecs.availability-zone"]] = ci
            assert ci["status"] == "ACTIVE" and ci["agentConnected"] is True
            cpu = next(r for r in ci["registeredResources"] if r["name"] == "CPU")
            mem = next(r for r in ci["registeredResources"] if r["name"] == "MEMORY")
            assert cpu["integerValue"] == 1024 and mem["integerValue"] == 512
        gold = ecs[0].list_container_instances(filter="attribute:tier == gold")["containerInstanceArns"]
        assert gold == [by_zone["z0"]["containerInstanceArn"]]
        with pytest.raises(ecs[0].exceptions.InvalidParameterException, match="filter"):
            ecs[0].list_container_instances(filter="attribute:tier ~ gold")

        family = uniq("web")
        image = os.path.join(DIST, "hello-http.wasm")
        ecs[0].register_task_definition(
            family=family, containerDefinitions=[{"name": "web", "image": image, "memory": 32}])
        # memberOf: RunTask only on the gold node.
        run = ecs[1].run_task(taskDefinition=family, count=2, placementConstraints=[
            {"type": "memberOf", "expression": "attribute:tier == gold"}])
        assert not run["failures"], run
        assert {t["containerInstanceArn"] for t in run["tasks"]} == {gold[0]}
        assert {t["availabilityZone"] for t in run["tasks"]} == {"z0"}
        nowhere = ecs[1].run_task(taskDefinition=family, placementConstraints=[
            {"type": "memberOf", "expression": "attribute:tier == platinum"}])
        assert nowhere["failures"][0]["reason"] == "memberOf placement constraint"
        with pytest.raises(ecs[1].exceptions.InvalidParameterException, match=r"placementConstraints\[0\].expression"):
            ecs[1].run_task(taskDefinition=family, placementConstraints=[
                {"type": "memberOf", "expression": "tier == gold"}])
        for t in run["tasks"]:
            ecs[0].stop_task(task=t["taskArn"])

        # A task's logs, written on the gold node, read through the others.
        logged, group = uniq("logged"), f"/ecs/{uniq('app')}"
        ecs[0].register_task_definition(family=logged, containerDefinitions=[{
            "name": "job", "image": os.path.join(DIST, "echo.wasm"), "memory": 16,
            "command": ["from-z0"],
            "logConfiguration": {"logDriver": "awslogs", "options": {
                "awslogs-group": group, "awslogs-stream-prefix": "p", "awslogs-region": "us-west-2"}}}])
        job = ecs[0].run_task(taskDefinition=logged, placementConstraints=[
            {"type": "memberOf", "expression": "attribute:tier == gold"}])["tasks"][0]["taskArn"]
        ecs[2].get_waiter("tasks_stopped").wait(tasks=[job], WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        job_id = job.split("/")[-1]
        for n in nodes[1:]:
            events = n.client("logs").get_log_events(
                logGroupName=group, logStreamName=f"p/job/{job_id}", startFromHead=True)["events"]
            assert "argv[1]=from-z0" in [e["message"] for e in events], events
            # Its size, asked of z0 without reading the file.
            (stream,) = n.client("logs").describe_log_streams(logGroupName=group)["logStreams"]
            assert stream["storedBytes"] == os.path.getsize(
                os.path.join(dirs[0], "logs", "default", job_id, "job.log")), stream
            with urllib.request.urlopen(f"{n.endpoint}/logs/default/{job_id}", timeout=30) as r:
                assert "job stdout argv[1]=from-z0" in r.read().decode()
                cursor = r.headers["x-skiff-log-cursor"]
            # From the cursor: nothing more (the task stopped).
            with urllib.request.urlopen(f"{n.endpoint}/logs/default/{job_id}?from={cursor}", timeout=30) as r:
                assert (r.read(), r.headers["x-skiff-log-cursor"]) == (b"", cursor)
        # A module registered on z0 from a path that then goes away: the
        # other nodes fetch it from z0 by its digest.
        gone = os.path.join(dirs[0], "gone.wasm")
        shutil.copy(os.path.join(DIST, "echo.wasm"), gone)
        moved = uniq("moved")
        ecs[0].register_task_definition(family=moved, containerDefinitions=[{
            "name": "job", "image": gone, "memory": 16, "command": ["fetched"],
            "logConfiguration": {"logDriver": "awslogs", "options": {
                "awslogs-group": group, "awslogs-stream-prefix": "m", "awslogs-region": "us-west-2"}}}])
        os.remove(gone)
        job = ecs[1].run_task(taskDefinition=moved, placementConstraints=[
            {"type": "memberOf", "expression": "attribute:ecs.availability-zone == z2"}])["tasks"][0]["taskArn"]
        ecs[1].get_waiter("tasks_stopped").wait(tasks=[job], WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        done = ecs[1].describe_tasks(tasks=[job])["tasks"][0]
        assert done["containers"][0].get("exitCode") == 0, (done.get("stoppedReason"), done["containers"][0].get("reason"))
        events = nodes[1].client("logs").get_log_events(
            logGroupName=group, logStreamName=f"m/job/{job.split('/')[-1]}", startFromHead=True)["events"]
        assert "argv[1]=fetched" in [e["message"] for e in events], events
        # Only nodes may read a node's files.
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"{nodes[0].endpoint}/_skiff/logs/default/{job_id}", timeout=30)

        # A DAEMON service: one task on each node, whichever node is asked.
        daemon = uniq("daemon")
        ecs[1].create_service(serviceName=daemon, taskDefinition=family, schedulingStrategy="DAEMON")

        def daemon_zones():
            arns = ecs[0].list_tasks(serviceName=daemon, desiredStatus="RUNNING")["taskArns"]
            ts = ecs[0].describe_tasks(tasks=arns)["tasks"] if arns else []
            return sorted(t["availabilityZone"] for t in ts if t["lastStatus"] == "RUNNING")

        wait_for("a daemon task on each node", lambda: daemon_zones() == ["z0", "z1", "z2"])
        assert ecs[2].describe_services(services=[daemon])["services"][0]["desiredCount"] == 3

        # Service Connect across nodes: a backend only on z0, called by
        # name from a guest on z2 (its node forwards the call to z0's).
        ns = uniq("ns")
        sc_family = uniq("sc")
        ecs[0].register_task_definition(family=sc_family, containerDefinitions=[{
            "name": "web", "image": image, "memory": 32,
            "portMappings": [{"name": "api", "containerPort": 8080}],
            "environment": [{"name": "GREETING", "value": "on z0"}]}])
        backend, caller = uniq("backend"), uniq("caller")
        ecs[0].create_service(
            serviceName=backend, taskDefinition=sc_family, desiredCount=1,
            placementConstraints=[{"type": "memberOf", "expression": "attribute:tier == gold"}],
            serviceConnectConfiguration={"enabled": True, "namespace": ns, "services": [
                {"portName": "api", "clientAliases": [{"port": 80, "dnsName": "backend"}]}]})
        ecs[1].create_service(
            serviceName=caller, taskDefinition=family, desiredCount=1,
            placementConstraints=[{"type": "memberOf", "expression": "attribute:ecs.availability-zone == z2"}],
            serviceConnectConfiguration={"enabled": True, "namespace": ns})
        ecs[2].get_waiter("services_stable").wait(
            services=[backend, caller], WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        host, port = nodes[2].ingress
        req = urllib.request.Request(f"http://{host}:{port}/fetch?url=http://backend/",
                                     headers={"Host": f"{caller}.localhost"})
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.read() == b"fetched 200: hello from skiff (on z0)\n"
        for name in (backend, caller):
            ecs[0].delete_service(service=name, force=True)

        # A service of 3, one per zone; the z1 node set DRAINING: its task
        # moves to the others, and it takes no new ones.
        svc = uniq("svc")
        ecs[2].create_service(serviceName=svc, taskDefinition=family, desiredCount=3)

        def zones():
            arns = ecs[0].list_tasks(serviceName=svc, desiredStatus="RUNNING")["taskArns"]
            ts = ecs[0].describe_tasks(tasks=arns)["tasks"] if arns else []
            return sorted(t["availabilityZone"] for t in ts if t["lastStatus"] == "RUNNING")

        wait_for("one task per zone", lambda: zones() == ["z0", "z1", "z2"])

        # Traffic through z2's ingress; z2's metrics read through z0 (as
        # the dashboard sums a service over the nodes) are z2's own.
        host, port = nodes[2].ingress
        for _ in range(5):
            req = urllib.request.Request(f"http://{host}:{port}/", headers={"Host": f"{svc}.localhost"})
            with urllib.request.urlopen(req, timeout=30) as r:
                assert r.status == 200

        def served(text):
            return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("skiff_http_requests_total{") and f'service="{svc}"' in line)

        def metrics(endpoint, query=""):
            with urllib.request.urlopen(f"{endpoint}/metrics{query}", timeout=30) as r:
                return r.read().decode()

        z2_id = by_zone["z2"]["ec2InstanceId"]
        direct = served(metrics(nodes[2].endpoint))
        assert direct >= 5
        assert served(metrics(nodes[0].endpoint, f"?node={z2_id}")) == direct
        with pytest.raises(urllib.error.HTTPError) as e:
            metrics(nodes[0].endpoint, "?node=no-such-node")
        assert e.value.code == 404 and b"no container instance no-such-node" in e.value.read()
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"{nodes[0].endpoint}/_skiff/metrics", timeout=30)
        z1 = by_zone["z1"]["containerInstanceArn"]
        out = aws(nodes[1].endpoint, "update-container-instances-state",
                  "--container-instances", z1, "--status", "DRAINING")
        assert out["containerInstances"][0]["status"] == "DRAINING"
        moved = wait_for("the z1 task moved", lambda: (lambda z: len(z) == 3 and "z1" not in z and z)(zones()))
        assert sorted(set(moved)) == ["z0", "z2"]
        ci = ecs[2].describe_container_instances(containerInstances=[z1])["containerInstances"][0]
        assert ci["status"] == "DRAINING"
        # The daemon's task on z1 stops and is not moved.
        wait_for("the daemon off z1", lambda: daemon_zones() == ["z0", "z2"])
        assert ecs[2].describe_services(services=[daemon])["services"][0]["desiredCount"] == 2
        wait_for("z1 runs nothing", lambda: ecs[2].describe_container_instances(
            containerInstances=[z1])["containerInstances"][0]["runningTasksCount"] == 0)
        stopped = ecs[0].list_tasks(serviceName=svc, desiredStatus="STOPPED")["taskArns"]
        reasons = [t.get("stoppedReason", "") for t in ecs[0].describe_tasks(tasks=stopped)["tasks"]]
        assert any("which is DRAINING" in r for r in reasons), reasons
        # Deregistering a node that runs tasks needs force.
        z0 = by_zone["z0"]["containerInstanceArn"]
        with pytest.raises(ecs[0].exceptions.InvalidParameterException, match="force"):
            ecs[0].deregister_container_instance(containerInstance=z0)
        gone = ecs[0].deregister_container_instance(containerInstance=z0, force=True)["containerInstance"]
        assert gone["status"] == "INACTIVE"
        # Its task is stopped and replaced on z2, the one node left ACTIVE.
        wait_for("all on z2", lambda: zones() == ["z2", "z2", "z2"])
        assert ecs[1].list_container_instances(status="INACTIVE")["containerInstanceArns"] == [z0]
        ecs[0].update_container_instances_state(containerInstances=[z1], status="ACTIVE")
        # z1 ACTIVE again (z0 deregistered): the daemon is back on it.
        wait_for("the daemon back on z1", lambda: daemon_zones() == ["z1", "z2"])
        ecs[0].update_service(service=svc, desiredCount=0)
    finally:
        for n in nodes:
            n.stop()
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
