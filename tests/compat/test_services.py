"""Services through the real boto3 and aws-cli: CreateService, UpdateService,
DeleteService, DescribeServices, ListServices, ListServiceDeployments,
DescribeServiceDeployments, the services-stable and services-inactive
waiters, replacement of stopped and unhealthy tasks, scaling, rolling
deployments, the start throttle, the circuit breaker, placement, and
recovery after kill -9."""

import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest
from botocore.exceptions import ClientError

from conftest import ROOT, Server, uniq, wait_for

DIST = os.path.join(ROOT, "guests", "dist")
AWS = os.path.join(ROOT, ".venv", "bin", "aws")



def web(**kw):
    c = {"name": "web", "image": os.path.join(DIST, "hello-http.wasm"), "memory": 32}
    c.update(kw)
    return c


def register(ecs, containers, family=None, **extra):
    family = family or uniq("svc")
    out = ecs.register_task_definition(family=family, containerDefinitions=containers, **extra)
    return out["taskDefinition"]["taskDefinitionArn"]



def stable(ecs, name, cluster="default", attempts=120):
    """The services-stable waiter (one deployment, desired = running), and
    then its deployment done: a task without health checks must have run
    a moment before its deployment completes, which the waiter, as in ECS,
    does not wait for."""
    ecs.get_waiter("services_stable").wait(
        cluster=cluster, services=[name], WaiterConfig={"Delay": 1, "MaxAttempts": attempts}
    )

    def done():
        svc = describe(ecs, name, cluster)
        return svc["deployments"][0]["rolloutState"] != "IN_PROGRESS" and svc

    return wait_for(f"{name}'s deployment to finish", done, timeout=attempts)


def describe(ecs, name, cluster="default"):
    out = ecs.describe_services(cluster=cluster, services=[name])
    assert out["failures"] == [], out["failures"]
    return out["services"][0]


def running_tasks(ecs, name, cluster="default"):
    arns = ecs.list_tasks(cluster=cluster, serviceName=name)["taskArns"]
    if not arns:
        return []
    return [t for t in ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"] if t["lastStatus"] == "RUNNING"]


def messages(svc):
    return [e["message"] for e in svc["events"]]


def delete(ecs, name, cluster="default"):
    ecs.delete_service(cluster=cluster, service=name, force=True)


def test_create_reaches_steady_state_and_replaces_a_stopped_task(ecs):
    td = register(ecs, [web()])
    name = uniq("web")
    created = ecs.create_service(
        serviceName=name, taskDefinition=td, desiredCount=3, tags=[{"key": "team", "value": "a"}]
    )["service"]
    assert created["status"] == "ACTIVE"
    assert created["desiredCount"] == 3
    assert created["deployments"][0]["status"] == "PRIMARY"
    assert created["deployments"][0]["rolloutState"] == "IN_PROGRESS"
    assert created["deployments"][0]["id"].startswith("ecs-svc/")
    assert created["deploymentController"] == {"type": "ECS"}
    assert created["serviceArn"].endswith(f":service/default/{name}")

    svc = stable(ecs, name)
    assert (svc["runningCount"], svc["pendingCount"]) == (3, 0)
    assert svc["deployments"][0]["rolloutState"] == "COMPLETED"
    assert messages(svc)[0] == f"(service {name}) has reached a steady state."
    assert any(m.startswith(f"(service {name}) has started 3 tasks: (task ") for m in messages(svc))
    assert name in [a.split("/")[-1] for a in ecs.list_services()["serviceArns"]]
    tagged = ecs.describe_services(services=[name], include=["TAGS"])["services"][0]
    assert tagged["tags"] == [{"key": "team", "value": "a"}]

    tasks = running_tasks(ecs, name)
    assert len(tasks) == 3
    for t in tasks:
        assert t["group"] == f"service:{name}"
        assert t["startedBy"] == svc["deployments"][0]["id"]
    victim = tasks[0]["taskArn"]
    ecs.stop_task(task=victim, reason="chaos")

    def replaced():
        now = running_tasks(ecs, name)
        arns = {t["taskArn"] for t in now}
        return len(now) == 3 and victim not in arns and now

    wait_for("a replacement of the stopped task", replaced, timeout=30)
    gone = ecs.describe_tasks(tasks=[victim])["tasks"][0]
    assert gone["stoppedReason"] == "chaos"
    svc = stable(ecs, name)
    assert svc["runningCount"] == 3
    delete(ecs, name)


def test_scale_out_and_in(ecs):
    td = register(ecs, [web()])
    name = uniq("scale")
    ecs.create_service(serviceName=name, taskDefinition=td, desiredCount=1)
    stable(ecs, name)
    ecs.update_service(service=name, desiredCount=4)
    assert stable(ecs, name)["runningCount"] == 4
    before = {t["taskArn"] for t in running_tasks(ecs, name)}
    out = ecs.update_service(service=name, desiredCount=2)["service"]
    assert out["desiredCount"] == 2
    svc = stable(ecs, name)
    assert svc["runningCount"] == 2
    # The deployment did not change: scaling is not a new deployment.
    assert len(svc["deployments"]) == 1
    stopped = ecs.list_tasks(serviceName=name, desiredStatus="STOPPED")["taskArns"]
    stopped = [t for t in ecs.describe_tasks(tasks=stopped)["tasks"] if t["taskArn"] in before]
    assert len(stopped) == 2
    for t in stopped:
        assert t["stopCode"] == "ServiceSchedulerInitiated"
        assert t["stoppedReason"].startswith("Scaling activity initiated by (deployment ecs-svc/")
    assert any("has stopped 2 running tasks" in m for m in messages(svc))
    delete(ecs, name)


def test_rolling_update_keeps_minimum_healthy_and_completes(ecs):
    family = uniq("roll")
    v1 = register(ecs, [web(environment=[{"name": "GREETING", "value": "v1"}])], family=family)
    v2 = register(ecs, [web(environment=[{"name": "GREETING", "value": "v2"}])], family=family)
    name = uniq("roll")
    ecs.create_service(
        serviceName=name,
        taskDefinition=v1,
        desiredCount=4,
        deploymentConfiguration={"minimumHealthyPercent": 50, "maximumPercent": 150},
    )
    stable(ecs, name)
    since = time.time()
    out = ecs.update_service(service=name, taskDefinition=v2)["service"]
    assert [d["status"] for d in out["deployments"]] == ["PRIMARY", "ACTIVE"]
    assert out["taskDefinition"] == v2
    # Watch the rollout: never more than 150% of 4 tasks alive, never fewer
    # than 50% running.
    seen_max, seen_min = 0, 99
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        svc = describe(ecs, name)
        alive = sum(d["runningCount"] + d["pendingCount"] for d in svc["deployments"])
        seen_max = max(seen_max, alive)
        seen_min = min(seen_min, svc["runningCount"])
        if len(svc["deployments"]) == 1 and svc["runningCount"] == 4:
            break
        time.sleep(0.02)
    assert seen_max <= 6, seen_max
    assert seen_min >= 2, seen_min
    svc = stable(ecs, name)
    primary = svc["deployments"][0]
    assert (primary["taskDefinition"], primary["rolloutState"]) == (v2, "COMPLETED")
    assert all(t["taskDefinitionArn"] == v2 for t in running_tasks(ecs, name))
    assert any(m.endswith("deployment completed.") and primary["id"] in m for m in messages(svc))

    # What Terraform's wait_for_steady_state reads: the service deployment
    # whose target revision carries the primary's id, SUCCESSFUL.
    briefs = ecs.list_service_deployments(service=name, createdAt={"after": since})["serviceDeployments"]
    digits = primary["id"].split("/")[1]
    mine = [b for b in briefs if digits in b["targetServiceRevisionArn"]]
    assert len(mine) == 1 and mine[0]["status"] == "SUCCESSFUL"
    full = ecs.describe_service_deployments(serviceDeploymentArns=[mine[0]["serviceDeploymentArn"]])
    assert full["failures"] == []
    sd = full["serviceDeployments"][0]
    assert sd["status"] == "SUCCESSFUL"
    assert sd["targetServiceRevision"]["runningTaskCount"] == 4
    assert len(sd["sourceServiceRevisions"]) == 1
    everything = ecs.list_service_deployments(service=name)["serviceDeployments"]
    assert len(everything) == 2 and everything[0]["serviceDeploymentArn"] == mine[0]["serviceDeploymentArn"]
    assert ecs.list_service_deployments(service=name, status=["IN_PROGRESS"])["serviceDeployments"] == []
    missing = ecs.describe_service_deployments(serviceDeploymentArns=[mine[0]["serviceDeploymentArn"] + "9"])
    assert missing["failures"][0]["reason"] == "MISSING"
    delete(ecs, name)


def test_unhealthy_tasks_are_replaced_after_the_grace_period(ecs):
    health_dir = tempfile.mkdtemp(prefix="skiff-health-")
    flag = os.path.join(health_dir, "ok")
    open(flag, "w").close()
    td = register(
        ecs,
        [
            web(
                environment=[{"name": "HEALTH_FILE", "value": "/health/ok"}],
                mountPoints=[{"sourceVolume": "health", "containerPath": "/health", "readOnly": True}],
                healthCheck={"command": ["CMD", "GET /healthz"], "interval": 5, "retries": 1},
            )
        ],
        volumes=[{"name": "health", "host": {"sourcePath": health_dir}}],
    )
    name = uniq("health")
    ecs.create_service(serviceName=name, taskDefinition=td, desiredCount=1, healthCheckGracePeriodSeconds=600)
    stable(ecs, name)
    first = wait_for(
        "the task to be HEALTHY",
        lambda: [t for t in running_tasks(ecs, name) if t["healthStatus"] == "HEALTHY"],
    )[0]
    assert first["containers"][0]["healthStatus"] == "HEALTHY"
    os.remove(flag)
    wait_for(
        "the task to turn UNHEALTHY",
        lambda: ecs.describe_tasks(tasks=[first["taskArn"]])["tasks"][0]["healthStatus"] == "UNHEALTHY",
        timeout=30,
    )
    # Within the grace period nothing is replaced.
    svc = describe(ecs, name)
    assert not any("failed container health checks" in m for m in messages(svc))
    assert ecs.describe_tasks(tasks=[first["taskArn"]])["tasks"][0]["desiredStatus"] == "RUNNING"
    # Without it, the unhealthy task goes, and its replacement turns healthy
    # once the check passes again.
    ecs.update_service(service=name, healthCheckGracePeriodSeconds=0)
    wait_for(
        "the unhealthy task to be stopped",
        lambda: ecs.describe_tasks(tasks=[first["taskArn"]])["tasks"][0]["desiredStatus"] == "STOPPED",
        timeout=30,
    )
    t = ecs.describe_tasks(tasks=[first["taskArn"]])["tasks"][0]
    assert t["stoppedReason"] == "Task failed container health checks"
    assert any(
        m == f"(service {name}) (task {first['taskArn'].split('/')[-1]}) failed container health checks."
        for m in messages(describe(ecs, name))
    )
    open(flag, "w").close()
    wait_for(
        "a healthy replacement",
        lambda: [t for t in running_tasks(ecs, name) if t["healthStatus"] == "HEALTHY"],
        timeout=60,
    )
    assert stable(ecs, name)["runningCount"] == 1
    delete(ecs, name)
    shutil.rmtree(health_dir, ignore_errors=True)


def test_tasks_that_keep_failing_are_throttled_and_a_new_deployment_resets(ecs):
    family = uniq("crashloop")
    bad = register(
        ecs,
        [{"name": "job", "image": os.path.join(DIST, "echo.wasm"), "memory": 16, "command": ["--exit", "1"]}],
        family=family,
    )
    good = register(ecs, [web()], family=family)
    name = uniq("crashloop")
    ecs.create_service(serviceName=name, taskDefinition=bad, desiredCount=1)
    wait_for(
        "the throttle event",
        lambda: any("is unable to consistently start tasks successfully" in m for m in messages(describe(ecs, name))),
        timeout=30,
    )
    # Throttled: over the next second at most one more task starts.
    count = lambda: len(ecs.list_tasks(serviceName=name, desiredStatus="STOPPED")["taskArns"])  # noqa: E731
    n0 = count()
    time.sleep(1.0)
    assert count() - n0 <= 1
    failed = describe(ecs, name)["deployments"][0]["failedTasks"]
    assert failed >= 3
    ecs.update_service(service=name, taskDefinition=good)
    svc = stable(ecs, name)
    assert svc["runningCount"] == 1
    delete(ecs, name)


def test_circuit_breaker_rolls_back_a_revision_that_exits_right_after_it_runs(ecs):
    # The guest exits at once: its tasks are RUNNING for a moment, long
    # enough for a pass to see them and stop the old ones, but never long
    # enough to complete the deployment, so the breaker trips.
    family = uniq("exits")
    good = register(ecs, [web()], family=family)
    bad = register(
        ecs,
        [{"name": "web", "image": os.path.join(DIST, "echo.wasm"), "memory": 16, "command": ["--exit", "1"]}],
        family=family,
    )
    name = uniq("exits")
    ecs.create_service(
        serviceName=name,
        taskDefinition=good,
        desiredCount=2,
        deploymentConfiguration={
            "deploymentCircuitBreaker": {"enable": True, "rollback": True},
            "minimumHealthyPercent": 50,
        },
    )
    stable(ecs, name)
    failing = ecs.update_service(service=name, taskDefinition=bad)["service"]["deployments"][0]["id"]

    def rolled_back():
        svc = describe(ecs, name)
        return svc["taskDefinition"] == good and svc

    svc = wait_for("the rollback", rolled_back, timeout=90)
    assert any(f"(deployment {failing}) deployment failed: tasks failed to start." in m for m in messages(svc))
    assert not any(f"(deployment {failing}) deployment completed." in m for m in messages(svc))
    svc = stable(ecs, name)
    assert svc["deployments"][0]["rolloutState"] == "COMPLETED"
    assert all(t["taskDefinitionArn"] == good for t in running_tasks(ecs, name))
    delete(ecs, name)


def test_circuit_breaker_rolls_back_to_the_last_completed_deployment(ecs):
    family = uniq("breaker")
    good_name, bad_name = f"{family}-good.example.test", f"{family}-bad.example.test"
    good = register(ecs, [web(dockerLabels={"skiff.domains": good_name})], family=family)
    # Tasks that fail to start (their module is missing), never RUNNING: a
    # guest that exits at once could be seen RUNNING by the pass that
    # completes the deployment, and a completed deployment does not roll
    # back (as in ECS).
    bad = register(
        ecs,
        [web(image=os.path.join(DIST, f"{family}-missing.wasm"), dockerLabels={"skiff.domains": bad_name})],
        family=family,
    )
    name = uniq("breaker")
    ecs.create_service(
        serviceName=name,
        taskDefinition=good,
        desiredCount=2,
        deploymentConfiguration={"deploymentCircuitBreaker": {"enable": True, "rollback": True}},
    )
    stable(ecs, name)
    since = time.time()
    failing = ecs.update_service(service=name, taskDefinition=bad)["service"]["deployments"][0]["id"]

    def rolled_back():
        svc = describe(ecs, name)
        return svc["taskDefinition"] == good and any("rolling back to deployment" in m for m in messages(svc)) and svc

    svc = wait_for("the rollback", rolled_back, timeout=60)
    failed = [d for d in svc["deployments"] if d["id"] == failing]
    if failed:
        assert failed[0]["rolloutState"] == "FAILED"
        assert failed[0]["rolloutStateReason"].startswith("ECS deployment circuit breaker")
    assert any(f"(deployment {failing}) deployment failed: tasks failed to start." in m for m in messages(svc))
    svc = stable(ecs, name)
    assert svc["deployments"][0]["taskDefinition"] == good
    assert all(t["taskDefinitionArn"] == good for t in running_tasks(ecs, name))
    briefs = ecs.list_service_deployments(service=name, createdAt={"after": since})["serviceDeployments"]
    by_digits = {b["targetServiceRevisionArn"].split("/")[-1]: b for b in briefs}
    assert by_digits[failing.split("/")[1]]["status"] == "ROLLBACK_SUCCESSFUL"
    full = ecs.describe_service_deployments(
        serviceDeploymentArns=[by_digits[failing.split("/")[1]]["serviceDeploymentArn"]]
    )["serviceDeployments"][0]
    assert full["rollback"]["reason"].startswith("ECS deployment circuit breaker")
    assert full["deploymentCircuitBreaker"]["status"] == "TRIGGERED"
    # The domains went back with the task definition: the failed one's
    # name is free again, the good one's is the service's once more.
    other = uniq("claim")
    ecs.create_service(serviceName=other, desiredCount=0,
                       taskDefinition=register(ecs, [web(dockerLabels={"skiff.domains": bad_name})]))
    with pytest.raises(ClientError) as e:
        ecs.create_service(serviceName=uniq("claim"), desiredCount=0,
                           taskDefinition=register(ecs, [web(dockerLabels={"skiff.domains": good_name})]))
    assert f"already claimed by service {name!r}".replace("'", '"') in e.value.response["Error"]["Message"]
    ecs.delete_service(service=other)
    delete(ecs, name)


def test_delete_drains_then_inactive_and_the_name_can_be_reused(ecs):
    td = register(ecs, [web()])
    name = uniq("del")
    ecs.create_service(serviceName=name, taskDefinition=td, desiredCount=2)
    stable(ecs, name)
    with pytest.raises(ClientError) as e:
        ecs.delete_service(service=name)
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    assert "cannot be stopped while it is scaled above 0" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        ecs.create_service(serviceName=name, taskDefinition=td, desiredCount=1)
    assert "not idempotent" in e.value.response["Error"]["Message"]
    out = ecs.delete_service(service=name, force=True)["service"]
    assert out["status"] == "DRAINING"
    ecs.get_waiter("services_inactive").wait(services=[name], WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    assert running_tasks(ecs, name) == []
    assert name not in [a.split("/")[-1] for a in ecs.list_services()["serviceArns"]]
    with pytest.raises(ClientError) as e:
        ecs.update_service(service=name, desiredCount=1)
    assert e.value.response["Error"]["Code"] == "ServiceNotActiveException"
    ecs.create_service(serviceName=name, taskDefinition=td, desiredCount=1)
    assert stable(ecs, name)["runningCount"] == 1
    delete(ecs, name)


def test_bad_requests_name_the_field(ecs):
    td = register(ecs, [web()])

    def code_and_message(**kw):
        with pytest.raises(ClientError) as e:
            ecs.create_service(**kw)
        return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]

    code, msg = code_and_message(serviceName="bad name", taskDefinition=td, desiredCount=1)
    assert "serviceName" in msg
    code, msg = code_and_message(serviceName=uniq("x"), taskDefinition=td)
    assert "desiredCount is required" in msg
    code, msg = code_and_message(
        serviceName=uniq("x"),
        taskDefinition=td,
        desiredCount=1,
        deploymentConfiguration={"minimumHealthyPercent": 150},
    )
    assert "deploymentConfiguration.minimumHealthyPercent" in msg
    code, msg = code_and_message(
        serviceName=uniq("x"), taskDefinition=td, desiredCount=1, placementStrategy=[{"type": "binpack"}]
    )
    assert "placementStrategy[0].field must be cpu or memory" in msg
    code, msg = code_and_message(serviceName=uniq("x"), taskDefinition="nope:9", desiredCount=1)
    assert "TaskDefinition not found" in msg
    code, msg = code_and_message(serviceName=uniq("x"), taskDefinition=td, desiredCount=1, schedulingStrategy="DAEMON")
    assert code == "InvalidParameterException"
    assert "desiredCount cannot be set for a DAEMON service" in msg
    with pytest.raises(ClientError) as e:
        ecs.update_service(service="no-such-service", desiredCount=1)
    assert e.value.response["Error"]["Code"] == "ServiceNotFoundException"
    out = ecs.describe_services(services=["no-such-service"])
    assert out["failures"][0]["reason"] == "MISSING"


def test_aws_cli_waits_for_a_service(server):
    ecs = server.client()
    td = register(ecs, [web()])
    name = uniq("cli")
    env = dict(os.environ, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y", AWS_DEFAULT_REGION="us-west-2")
    base = [AWS, "--endpoint-url", server.endpoint, "ecs"]
    out = subprocess.run(
        base + ["create-service", "--service-name", name, "--task-definition", td, "--desired-count", "2"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )
    assert json.loads(out.stdout)["service"]["serviceName"] == name
    subprocess.run(base + ["wait", "services-stable", "--services", name], env=env, timeout=120, check=True)
    subprocess.run(base + ["delete-service", "--service", name, "--force"], env=env, capture_output=True, timeout=60, check=True)
    subprocess.run(base + ["wait", "services-inactive", "--services", name], env=env, timeout=120, check=True)


@pytest.fixture()
def two_workers():
    data = tempfile.mkdtemp(prefix="skiff-placement-")
    s = Server(data, "--workers", "2", "--memory", "1024").start()
    yield s
    s.stop()
    shutil.rmtree(data, ignore_errors=True)


def workers_of(ecs, name):
    """The worker threads of the one node that run the service's tasks."""
    def worker(t):
        return next("worker-" + a["value"] for a in t["attributes"] if a["name"] == "skiff.worker")
    return sorted(worker(t) for t in running_tasks(ecs, name))


def test_placement_strategies_and_distinct_instance(two_workers):
    ecs = two_workers.client()
    td = register(ecs, [web(memory=64)])
    spread, binpack, distinct = uniq("spread"), uniq("binpack"), uniq("distinct")
    ecs.create_service(serviceName=spread, taskDefinition=td, desiredCount=4)
    stable(ecs, spread)
    assert workers_of(ecs, spread) == ["worker-0", "worker-0", "worker-1", "worker-1"]
    ecs.create_service(
        serviceName=binpack,
        taskDefinition=td,
        desiredCount=3,
        placementStrategy=[{"type": "binpack", "field": "memory"}],
    )
    stable(ecs, binpack)
    assert len(set(workers_of(ecs, binpack))) == 1
    ecs.create_service(
        serviceName=distinct,
        taskDefinition=td,
        desiredCount=3,
        placementConstraints=[{"type": "distinctInstance"}],
    )

    def unplaced():
        svc = describe(ecs, distinct)
        return svc["runningCount"] == 1 and any("was unable to place a task" in m for m in messages(svc)) and svc

    # One node is one container instance: one task of the service on it.
    svc = wait_for("one task and a placement event", unplaced, timeout=30)
    assert any("distinctInstance" in m for m in messages(svc))
    arns = {t["containerInstanceArn"] for t in running_tasks(ecs, distinct)}
    assert len(arns) == 1 and ":container-instance/default/" in arns.pop()
    # A task that fits nowhere says which resource is short.
    huge = register(ecs, [web(memory=4096)])
    big = uniq("big")
    ecs.create_service(serviceName=big, taskDefinition=huge, desiredCount=1)
    wait_for(
        "a RESOURCE:MEMORY event",
        lambda: any("Reason: RESOURCE:MEMORY" in m for m in messages(describe(ecs, big))),
        timeout=30,
    )


def test_services_come_back_after_kill_9(fresh_dir):
    s = Server(fresh_dir).start()
    ecs = s.client()
    td = register(ecs, [web()])
    name = uniq("phoenix")
    ecs.create_service(serviceName=name, taskDefinition=td, desiredCount=3)
    stable(ecs, name)
    before = {t["taskArn"] for t in running_tasks(ecs, name)}
    s.kill9()
    s.start()
    ecs = s.client()
    # No client does anything: the scheduler brings the count back.
    now = wait_for(
        "3 new running tasks",
        lambda: (lambda ts: len(ts) == 3 and not ({t["taskArn"] for t in ts} & before) and ts)(running_tasks(ecs, name)),
        timeout=60,
    )
    assert len(now) == 3
    assert stable(ecs, name)["runningCount"] == 3
    s.stop()


def test_a_cluster_with_services_cannot_be_deleted(ecs):
    cluster = uniq("cl")
    ecs.create_cluster(clusterName=cluster)
    td = register(ecs, [web()])
    name = uniq("svc")
    ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=td, desiredCount=1)
    stable(ecs, name, cluster=cluster)
    c = ecs.describe_clusters(clusters=[cluster])["clusters"][0]
    assert (c["activeServicesCount"], c["runningTasksCount"]) == (1, 1)
    with pytest.raises(ClientError) as e:
        ecs.delete_cluster(cluster=cluster)
    assert e.value.response["Error"]["Code"] == "ClusterContainsServicesException"
    ecs.delete_service(cluster=cluster, service=name, force=True)
    ecs.get_waiter("services_inactive").wait(
        cluster=cluster, services=[name], WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    wait_for(
        "the cluster's tasks to stop",
        lambda: ecs.describe_clusters(clusters=[cluster])["clusters"][0]["runningTasksCount"] == 0,
    )
    assert ecs.delete_cluster(cluster=cluster)["cluster"]["status"] == "INACTIVE"


def test_scale_in_and_deployments_pass_over_protected_tasks(server):
    """UpdateTaskProtection and GetTaskProtection through boto3 and the
    aws-cli: scale-in stops the unprotected tasks and leaves the protected
    ones running; a deployment waits for a protected old task until its
    protection is removed."""
    ecs = server.client()
    td = register(ecs, [web()])
    name = uniq("protect")
    ecs.create_service(serviceName=name, taskDefinition=td, desiredCount=3)
    stable(ecs, name)
    a, b, c = sorted(t["taskArn"] for t in running_tasks(ecs, name))

    before = time.time()
    out = ecs.update_task_protection(cluster="default", tasks=[a, b], protectionEnabled=True, expiresInMinutes=10)
    assert out["failures"] == []
    assert {p["taskArn"] for p in out["protectedTasks"]} == {a, b}
    for p in out["protectedTasks"]:
        assert p["protectionEnabled"] is True
        assert before + 590 < p["expirationDate"].timestamp() < time.time() + 610
    got = ecs.get_task_protection(cluster="default", tasks=[a, b, c])["protectedTasks"]
    assert {p["taskArn"]: p["protectionEnabled"] for p in got} == {a: True, b: True, c: False}
    listed = ecs.get_task_protection(cluster="default")["protectedTasks"]
    assert {p["taskArn"] for p in listed} >= {a, b} and c not in {p["taskArn"] for p in listed}

    # Tasks that cannot be protected are failures; bad values name the field.
    alone = ecs.run_task(taskDefinition=td)["tasks"][0]["taskArn"]
    out = ecs.update_task_protection(cluster="default", tasks=[alone, "no-such-task"], protectionEnabled=True)
    reasons = {f["arn"].split("/")[-1]: f["reason"] for f in out["failures"]}
    assert reasons == {alone.split("/")[-1]: "TASK_NOT_VALID", "no-such-task": "MISSING"}
    assert "not started by a service" in out["failures"][0]["detail"]
    ecs.stop_task(task=alone)
    for bad, field in [({"expiresInMinutes": 0}, "expiresInMinutes"), ({"expiresInMinutes": 2881}, "expiresInMinutes")]:
        with pytest.raises(ClientError) as e:
            ecs.update_task_protection(cluster="default", tasks=[a], protectionEnabled=True, **bad)
        assert e.value.response["Error"]["Code"] == "InvalidParameterException"
        assert field in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        ecs.update_task_protection(cluster="default", tasks=[a] * 11, protectionEnabled=True)
    assert "1 to 10 tasks" in e.value.response["Error"]["Message"]

    # Scale in to 1: only c, unprotected, is stopped, and an event says why
    # the service stays above its desired count.
    ecs.update_service(service=name, desiredCount=1)
    held = "was unable to stop 1 task for scale-in or deployment"
    wait_for("the protection event", lambda: any(held in m for m in messages(describe(ecs, name))), timeout=30)
    tasks = {t["taskArn"]: t for t in ecs.describe_tasks(tasks=[a, b, c])["tasks"]}
    assert tasks[c]["desiredStatus"] == "STOPPED"
    assert tasks[c]["stoppedReason"].startswith("Scaling activity initiated by")
    assert tasks[a]["desiredStatus"] == tasks[b]["desiredStatus"] == "RUNNING"

    # The aws-cli removes a's protection: a is stopped, b stays.
    env = dict(os.environ, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y", AWS_DEFAULT_REGION="us-west-2")
    out = subprocess.run(
        [AWS, "--endpoint-url", server.endpoint, "ecs", "update-task-protection", "--cluster", "default",
         "--tasks", a, "--no-protection-enabled"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )
    assert json.loads(out.stdout)["protectedTasks"] == [{"taskArn": a, "protectionEnabled": False}]
    svc = stable(ecs, name)
    assert [t["taskArn"] for t in running_tasks(ecs, name)] == [b]
    assert svc["runningCount"] == 1

    # A new deployment starts its task and waits for b.
    td2 = register(ecs, [web(environment=[{"name": "V", "value": "2"}])], family=td.split("/")[-1].split(":")[0])
    ecs.update_service(service=name, taskDefinition=td2)

    def waiting():
        svc = describe(ecs, name)
        return sum(held in m for m in messages(svc)) == 2 and svc

    svc = wait_for("the deployment to wait for the protected task", waiting, timeout=60)
    assert svc["deployments"][0]["rolloutState"] == "IN_PROGRESS"
    assert ecs.describe_tasks(tasks=[b])["tasks"][0]["desiredStatus"] == "RUNNING"
    ecs.update_task_protection(cluster="default", tasks=[b], protectionEnabled=False)
    svc = stable(ecs, name)
    assert svc["deployments"][0]["rolloutState"] == "COMPLETED"
    assert ecs.describe_tasks(tasks=[b])["tasks"][0]["desiredStatus"] == "STOPPED"
    delete(ecs, name)


def test_stop_service_deployment_rolls_back_and_revisions_say_what_ran(server):
    """StopServiceDeployment (ROLLBACK) and DescribeServiceRevisions through
    boto3 and the aws-cli."""
    ecs = server.client()
    family = uniq("stopdep")
    good = register(ecs, [web()], family=family)
    name = uniq("stopdep")
    ecs.create_service(serviceName=name, taskDefinition=good, desiredCount=2)
    stable(ecs, name)
    first = ecs.list_service_deployments(service=name)["serviceDeployments"][0]
    assert first["status"] == "SUCCESSFUL"

    # The revision of the first deployment: its task definition and images.
    rev_arn = first["targetServiceRevisionArn"]
    out = ecs.describe_service_revisions(serviceRevisionArns=[rev_arn, rev_arn[:-1] + "x", "nonsense"])
    [rev] = out["serviceRevisions"]
    assert rev["serviceRevisionArn"] == rev_arn
    assert rev["taskDefinition"] == good
    assert rev["serviceArn"].endswith(f":service/default/{name}")
    assert rev["containerImages"] == [{"containerName": "web", "image": os.path.join(DIST, "hello-http.wasm")}]
    assert [f["reason"] for f in out["failures"]] == ["MISSING", "MISSING"]
    assert "not a service revision ARN" in out["failures"][1]["detail"]
    env = dict(os.environ, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y", AWS_DEFAULT_REGION="us-west-2")
    cli = subprocess.run(
        [AWS, "--endpoint-url", server.endpoint, "ecs", "describe-service-revisions",
         "--service-revision-arns", rev_arn],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )
    assert json.loads(cli.stdout)["serviceRevisions"][0]["taskDefinition"] == good

    # A finished deployment cannot be stopped; bad requests name the field.
    with pytest.raises(ClientError) as e:
        ecs.stop_service_deployment(serviceDeploymentArn=first["serviceDeploymentArn"])
    assert e.value.response["Error"]["Code"] == "ConflictException"
    assert "SUCCESSFUL" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        ecs.stop_service_deployment(serviceDeploymentArn=first["serviceDeploymentArn"], stopType="ABORT")
    assert "stopType" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        ecs.stop_service_deployment(serviceDeploymentArn=first["serviceDeploymentArn"][:-1] + "x")
    assert e.value.response["Error"]["Code"] == "ServiceDeploymentNotFoundException"

    # A deployment whose tasks keep failing (no circuit breaker) stays in
    # progress until it is stopped; then the first revision comes back.
    bad = register(
        ecs,
        [{"name": "web", "image": os.path.join(DIST, "echo.wasm"), "memory": 16, "command": ["--exit", "1"]}],
        family=family,
    )
    ecs.update_service(service=name, taskDefinition=bad)
    failing = ecs.list_service_deployments(service=name, status=["IN_PROGRESS"])["serviceDeployments"]
    [failing] = [d for d in failing if d["serviceDeploymentArn"] != first["serviceDeploymentArn"]]
    wait_for("a failed task of the bad deployment",
             lambda: ecs.list_tasks(serviceName=name, desiredStatus="STOPPED")["taskArns"], timeout=30)
    out = ecs.stop_service_deployment(serviceDeploymentArn=failing["serviceDeploymentArn"], stopType="ROLLBACK")
    assert out["serviceDeploymentArn"] == failing["serviceDeploymentArn"]
    svc = stable(ecs, name)
    assert svc["taskDefinition"] == good
    assert all(t["taskDefinitionArn"] == good for t in running_tasks(ecs, name))
    assert any("rolling back to deployment" in m for m in messages(svc))
    full = ecs.describe_service_deployments(serviceDeploymentArns=[failing["serviceDeploymentArn"]])["serviceDeployments"][0]
    assert full["status"] == "ROLLBACK_SUCCESSFUL"
    assert full["rollback"]["reason"] == "Service deployment stopped by StopServiceDeployment (ROLLBACK)."
    assert full["rollback"]["serviceRevisionArn"] == rev_arn
    # The rollback is a deployment of its own, of the first revision's
    # task definition.
    newest = ecs.list_service_deployments(service=name)["serviceDeployments"][0]
    back = ecs.describe_service_revisions(serviceRevisionArns=[newest["targetServiceRevisionArn"]])["serviceRevisions"][0]
    assert back["taskDefinition"] == good
    delete(ecs, name)


def test_a_daemon_service_runs_one_task_per_container_instance(server):
    """schedulingStrategy DAEMON on one node: one task, its desired count
    set by the scheduler; it is deployed in place and deleted without
    scaling to 0 first."""
    ecs = server.client()
    family = uniq("daemon")
    td1 = register(ecs, [web()], family=family)
    name = uniq("daemon")
    with pytest.raises(ClientError) as e:
        ecs.create_service(serviceName=name, taskDefinition=td1, schedulingStrategy="DAEMON", desiredCount=2)
    assert "desiredCount cannot be set for a DAEMON service" in e.value.response["Error"]["Message"]
    created = ecs.create_service(serviceName=name, taskDefinition=td1, schedulingStrategy="DAEMON")["service"]
    assert created["schedulingStrategy"] == "DAEMON"
    assert created["deploymentConfiguration"]["minimumHealthyPercent"] == 0
    svc = stable(ecs, name)
    node = ecs.list_container_instances()["containerInstanceArns"][0]
    assert (svc["desiredCount"], svc["runningCount"]) == (1, 1)
    assert [t["containerInstanceArn"] for t in running_tasks(ecs, name)] == [node]
    with pytest.raises(ClientError) as e:
        ecs.update_service(service=name, desiredCount=3)
    assert "one task on each container instance" in e.value.response["Error"]["Message"]

    td2 = register(ecs, [web(environment=[{"name": "V", "value": "2"}])], family=family)
    ecs.update_service(service=name, taskDefinition=td2)
    svc = stable(ecs, name)
    assert svc["deployments"][0]["rolloutState"] == "COMPLETED"
    assert [t["taskDefinitionArn"] for t in running_tasks(ecs, name)] == [td2]
    ecs.delete_service(service=name)
    ecs.get_waiter("services_inactive").wait(services=[name], WaiterConfig={"Delay": 1, "MaxAttempts": 60})
