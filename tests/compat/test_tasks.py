"""Tasks through the real boto3: RunTask, StopTask, DescribeTasks, ListTasks,
the lifecycle with guests that exit 0, exit non-zero, trap, exceed memory
and never end, and the clients' waiters."""

import os
import time
import urllib.request
import uuid

import pytest
from botocore.exceptions import ClientError, WaiterError

from conftest import REGION, ROOT

DIST = os.path.join(ROOT, "guests", "dist")


def uniq(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def register(ecs, containers, **extra):
    family = uniq("t")
    ecs.register_task_definition(family=family, containerDefinitions=containers, **extra)
    return family


def container(name, image, **kw):
    c = {"name": name, "image": os.path.join(DIST, image), "memory": 32}
    c.update(kw)
    return c


def wait_stopped(ecs, arns, cluster="default"):
    ecs.get_waiter("tasks_stopped").wait(
        cluster=cluster, tasks=arns, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    return ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"]


def run_one(ecs, family, **kw):
    out = ecs.run_task(taskDefinition=family, **kw)
    assert out["failures"] == []
    return out["tasks"][0]


def test_exit_zero_and_non_zero(ecs):
    ok = register(ecs, [container("main", "echo.wasm", command=["--exit", "0"])])
    bad = register(ecs, [container("main", "echo.wasm", command=["--exit", "3"])])
    t_ok, t_bad = run_one(ecs, ok), run_one(ecs, bad)
    assert t_ok["lastStatus"] == "PROVISIONING" and t_ok["desiredStatus"] == "RUNNING"
    assert t_ok["group"] == f"family:{ok}"
    assert t_ok["taskArn"].startswith(f"arn:aws:ecs:{REGION}:000000000000:task/default/")
    done_ok, done_bad = wait_stopped(ecs, [t_ok["taskArn"], t_bad["taskArn"]])
    for t in (done_ok, done_bad):
        assert t["stopCode"] == "EssentialContainerExited"
        assert t["stoppedReason"] == "Essential container in task exited"
        assert t["desiredStatus"] == "STOPPED"
        for field in ("createdAt", "startedAt", "stoppingAt", "stoppedAt"):
            assert field in t, field
        assert t["createdAt"] <= t["startedAt"] <= t["stoppingAt"] <= t["stoppedAt"]
    assert done_ok["containers"][0]["exitCode"] == 0
    assert done_bad["containers"][0]["exitCode"] == 3
    assert done_bad["containers"][0]["lastStatus"] == "STOPPED"


def test_trap_memory_and_timeout_in_words(ecs):
    trap = register(ecs, [container("main", "crash.wasm", command=["oob"])])
    hog = register(ecs, [container("main", "hog.wasm", memory=16)])
    slow = register(ecs, [container("main", "spin.wasm", command=["100000000000"], dockerLabels={"skiff.timeout": "300ms"})])
    arns = [run_one(ecs, f)["taskArn"] for f in (trap, hog, slow)]
    t_trap, t_hog, t_slow = wait_stopped(ecs, arns)
    assert t_trap["containers"][0]["reason"] == "Trap: container main trapped: out-of-bounds memory access"
    assert "exitCode" not in t_trap["containers"][0]
    assert t_hog["containers"][0]["reason"] == "OutOfMemoryError: container main exceeded its 16 MiB limit; raise its memory"
    assert t_slow["containers"][0]["reason"] == "Timeout: container main ran longer than its timeout of 300ms (skiff.timeout)"
    for t in (t_trap, t_hog, t_slow):
        assert t["stopCode"] == "EssentialContainerExited"


def test_a_task_that_never_ends_runs_until_stopped(ecs):
    family = register(ecs, [container("web", "hello-http.wasm")])
    t = run_one(ecs, family, startedBy="pytest")
    ecs.get_waiter("tasks_running").wait(tasks=[t["taskArn"]], WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    running = ecs.describe_tasks(tasks=[t["taskArn"]])["tasks"][0]
    assert running["lastStatus"] == "RUNNING" and "startedAt" in running
    assert running["containers"][0]["lastStatus"] == "RUNNING"
    assert t["taskArn"] in ecs.list_tasks(family=family)["taskArns"]
    assert t["taskArn"] in ecs.list_tasks(startedBy="pytest")["taskArns"]
    stopped = ecs.stop_task(task=t["taskArn"], reason="done with it")["task"]
    assert stopped["desiredStatus"] == "STOPPED"
    (done,) = wait_stopped(ecs, [t["taskArn"]])
    assert done["stopCode"] == "UserInitiated"
    assert done["stoppedReason"] == "done with it"
    assert done["containers"][0]["reason"] == "stopped: done with it"
    assert t["taskArn"] not in ecs.list_tasks(family=family)["taskArns"]
    assert t["taskArn"] in ecs.list_tasks(family=family, desiredStatus="STOPPED")["taskArns"]
    # Stopping again is harmless.
    assert ecs.stop_task(task=t["taskArn"])["task"]["lastStatus"] == "STOPPED"


def test_missing_image_fails_to_start_naming_it(ecs):
    family = register(ecs, [{"name": "main", "image": "/nonexistent/app.wasm", "memory": 16}])
    (t,) = wait_stopped(ecs, [run_one(ecs, family)["taskArn"]])
    assert t["stopCode"] == "TaskFailedToStart"
    assert "/nonexistent/app.wasm" in t["stoppedReason"]
    assert t["stoppedReason"].startswith("CannotPullContainerError")
    assert "startedAt" not in t


def test_overrides_count_and_logs(server, ecs):
    family = register(ecs, [container("main", "echo.wasm", command=["default"], environment=[{"name": "A", "value": "1"}])])
    out = ecs.run_task(
        taskDefinition=family,
        count=3,
        overrides={"containerOverrides": [{"name": "main", "command": ["overridden", "--exit", "0"], "environment": [{"name": "B", "value": "2"}]}]},
    )
    assert len(out["tasks"]) == 3 and out["failures"] == []
    tasks = wait_stopped(ecs, [t["taskArn"] for t in out["tasks"]])
    assert all(t["containers"][0]["exitCode"] == 0 for t in tasks)
    task_id = tasks[0]["taskArn"].rsplit("/", 1)[1]
    logs = urllib.request.urlopen(f"{server.endpoint}/logs/default/{task_id}").read().decode()
    assert "main stdout argv[1]=overridden" in logs
    assert "main stdout env A=1" in logs and "main stdout env B=2" in logs
    with pytest.raises(ClientError) as e:
        ecs.run_task(taskDefinition=family, count=11)
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    with pytest.raises(ClientError) as e:
        ecs.run_task(taskDefinition=family, overrides={"containerOverrides": [{"name": "nope"}]})
    assert "nope" in e.value.response["Error"]["Message"]


def test_depends_on_orders_start_up(server, ecs):
    family = register(
        ecs,
        [
            container("init", "echo.wasm", essential=False, command=["init-ran", "--exit", "0"]),
            container("gate", "echo.wasm", essential=False, command=["--exit", "4"]),
            container(
                "main", "echo.wasm", command=["main-ran"],
                dependsOn=[{"containerName": "init", "condition": "SUCCESS"}],
            ),
            container(
                "blocked", "echo.wasm", essential=False,
                dependsOn=[{"containerName": "gate", "condition": "SUCCESS"}],
            ),
        ],
    )
    (t,) = wait_stopped(ecs, [run_one(ecs, family)["taskArn"]])
    by_name = {c["name"]: c for c in t["containers"]}
    assert by_name["init"]["exitCode"] == 0
    assert by_name["main"]["exitCode"] == 0
    assert by_name["gate"]["exitCode"] == 4
    assert "exitCode" not in by_name["blocked"]
    assert "gate exited with code 4" in by_name["blocked"]["reason"]
    task_id = t["taskArn"].rsplit("/", 1)[1]
    logs = urllib.request.urlopen(f"{server.endpoint}/logs/default/{task_id}").read().decode()
    assert logs.index("init stdout argv[1]=init-ran") < logs.index("main stdout argv[1]=main-ran")


def test_failed_dependency_of_an_essential_container_fails_the_task(ecs):
    family = register(
        ecs,
        [
            container("init", "echo.wasm", essential=False, command=["--exit", "2"]),
            container("main", "echo.wasm", dependsOn=[{"containerName": "init", "condition": "SUCCESS"}]),
        ],
    )
    (t,) = wait_stopped(ecs, [run_one(ecs, family)["taskArn"]])
    assert t["stopCode"] == "TaskFailedToStart"
    assert "init exited with code 2" in t["stoppedReason"]


def test_placement_failure_and_describe_failures(ecs):
    family = register(ecs, [container("main", "echo.wasm", memory=10_000_000)])
    out = ecs.run_task(taskDefinition=family)
    assert out["tasks"] == []
    assert out["failures"][0]["reason"] == "RESOURCE:MEMORY"
    family = register(ecs, [container("main", "echo.wasm", cpu=4096)])
    assert ecs.run_task(taskDefinition=family)["failures"][0]["reason"] == "RESOURCE:CPU"
    missing = f"arn:aws:ecs:{REGION}:000000000000:task/default/0123456789abcdef0123456789abcdef"
    out = ecs.describe_tasks(tasks=[missing])
    assert out["tasks"] == [] and out["failures"] == [{"arn": missing, "reason": "MISSING"}]
    # The waiter gives up at once on a MISSING task, as it does with ECS.
    with pytest.raises(WaiterError, match="MISSING"):
        ecs.get_waiter("tasks_running").wait(tasks=[missing], WaiterConfig={"Delay": 1, "MaxAttempts": 2})
    with pytest.raises(ClientError) as e:
        ecs.stop_task(task="0123456789abcdef0123456789abcdef")
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"


def test_deregistered_definitions_do_not_run(ecs):
    family = register(ecs, [container("main", "echo.wasm")])
    ecs.deregister_task_definition(taskDefinition=f"{family}:1")
    with pytest.raises(ClientError) as e:
        ecs.run_task(taskDefinition=f"{family}:1")
    assert "inactive" in e.value.response["Error"]["Message"]


def test_list_tasks_paginates_and_clusters_count_tasks(ecs):
    cluster = uniq("tasks")
    ecs.create_cluster(clusterName=cluster)
    family = register(ecs, [container("web", "hello-http.wasm", memory=8)])
    arns = [t["taskArn"] for t in ecs.run_task(cluster=cluster, taskDefinition=family, count=5)["tasks"]]
    ecs.get_waiter("tasks_running").wait(cluster=cluster, tasks=arns, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    pages = ecs.get_paginator("list_tasks").paginate(cluster=cluster, PaginationConfig={"PageSize": 2})
    assert sorted(a for p in pages for a in p["taskArns"]) == sorted(arns)
    assert ecs.describe_clusters(clusters=[cluster])["clusters"][0]["runningTasksCount"] == 5
    with pytest.raises(ClientError) as e:
        ecs.delete_cluster(cluster=cluster)
    assert e.value.response["Error"]["Code"] == "ClusterContainsTasksException"
    for a in arns:
        ecs.stop_task(cluster=cluster, task=a)
    wait_stopped(ecs, arns, cluster=cluster)
    assert ecs.delete_cluster(cluster=cluster)["cluster"]["status"] == "INACTIVE"
    with pytest.raises(ClientError) as e:
        ecs.run_task(cluster=cluster, taskDefinition=family)
    assert e.value.response["Error"]["Code"] == "ClusterNotFoundException"


def test_task_tags(ecs):
    family = register(ecs, [container("main", "echo.wasm")])
    t = ecs.run_task(taskDefinition=family, tags=[{"key": "job", "value": "nightly"}])["tasks"][0]
    out = ecs.describe_tasks(tasks=[t["taskArn"]], include=["TAGS"])["tasks"][0]
    assert out["tags"] == [{"key": "job", "value": "nightly"}]
    assert ecs.list_tags_for_resource(resourceArn=t["taskArn"])["tags"] == [{"key": "job", "value": "nightly"}]


def test_attributes_put_through_the_api_steer_placement(ecs):
    """PutAttributes, ListAttributes and DeleteAttributes on the node's
    container instance, and a memberOf constraint that reads them."""
    node = ecs.list_container_instances()["containerInstanceArns"][0]
    name = uniq("stack")
    family = register(ecs, [container("main", "echo.wasm")])
    where = [{"type": "memberOf", "expression": f"attribute:{name} == blue"}]
    assert ecs.run_task(taskDefinition=family, placementConstraints=where)["failures"][0]["reason"] == (
        "memberOf placement constraint")

    out = ecs.put_attributes(attributes=[
        {"name": name, "value": "blue", "targetType": "container-instance", "targetId": node},
        {"name": name + "-flag", "targetId": node.split("/")[-1]},
    ])
    assert out["attributes"][0] == {"name": name, "value": "blue", "targetType": "container-instance",
                                    "targetId": node}
    assert "value" not in out["attributes"][1]
    task = run_one(ecs, family, placementConstraints=where)
    assert task["containerInstanceArn"] == node
    wait_stopped(ecs, [task["taskArn"]])
    exists = [{"type": "memberOf", "expression": f"attribute:{name}-flag exists"}]
    wait_stopped(ecs, [run_one(ecs, family, placementConstraints=exists)["taskArn"]])

    listed = ecs.list_attributes(targetType="container-instance", attributeName=name)["attributes"]
    assert listed == [{"name": name, "value": "blue", "targetType": "container-instance", "targetId": node}]
    assert ecs.list_attributes(targetType="container-instance", attributeName=name, attributeValue="green")[
        "attributes"] == []
    # The node's own attributes are listed too.
    zone = ecs.list_attributes(targetType="container-instance", attributeName="ecs.availability-zone")["attributes"]
    assert [a["targetId"] for a in zone] == [node]
    shown = ecs.describe_container_instances(containerInstances=[node])["containerInstances"][0]["attributes"]
    assert {"name": name, "value": "blue"} in shown

    # Bad attributes name the field, and store nothing.
    for bad, words in [
        ({"name": "ecs.mine", "value": "x", "targetId": node}, "ecs. or skiff."),
        ({"name": name, "value": " padded", "targetId": node}, "attributes[0].value"),
        ({"name": "no spaces", "value": "x", "targetId": node}, "attributes[0].name"),
        ({"name": name, "value": "x"}, "attributes[0].targetId"),
        ({"name": name, "value": "x", "targetId": node, "targetType": "task"}, "targetType"),
    ]:
        with pytest.raises(ClientError) as e:
            ecs.put_attributes(attributes=[bad])
        assert words in e.value.response["Error"]["Message"], (bad, e.value.response)
    with pytest.raises(ClientError) as e:
        ecs.put_attributes(attributes=[{"name": name, "value": "x", "targetId": "no-such-node"}])
    assert e.value.response["Error"]["Code"] == "TargetNotFoundException"
    with pytest.raises(ClientError) as e:
        ecs.put_attributes(attributes=[{"name": f"{name}-{i}", "value": "x", "targetId": node} for i in range(9)])
    assert e.value.response["Error"]["Code"] == "AttributeLimitExceededException"
    assert ecs.list_attributes(targetType="container-instance", attributeName=name)["attributes"] == listed

    ecs.delete_attributes(attributes=[{"name": name, "targetId": node}, {"name": name + "-flag", "targetId": node}])
    assert ecs.list_attributes(targetType="container-instance", attributeName=name)["attributes"] == []
    assert ecs.run_task(taskDefinition=family, placementConstraints=where)["failures"][0]["reason"] == (
        "memberOf placement constraint")


def test_start_task_runs_one_task_on_each_instance_named(ecs):
    node = ecs.list_container_instances()["containerInstanceArns"][0]
    family = register(ecs, [container("main", "echo.wasm")])
    out = ecs.start_task(taskDefinition=family, containerInstances=[node, node.split("/")[-1]], startedBy="me")
    assert out["failures"] == []
    assert [t["containerInstanceArn"] for t in out["tasks"]] == [node, node]
    assert all(t["startedBy"] == "me" for t in out["tasks"])
    stopped = wait_stopped(ecs, [t["taskArn"] for t in out["tasks"]])
    assert [t["containers"][0]["exitCode"] for t in stopped] == [0, 0]

    missing = node.rsplit("/", 1)[0] + "/no-such-node"
    out = ecs.start_task(taskDefinition=family, containerInstances=[missing])
    assert out["tasks"] == [] and out["failures"][0]["arn"] == missing
    assert out["failures"][0]["reason"] == "MISSING"
    big = register(ecs, [container("main", "echo.wasm", memory=10_000_000)])
    out = ecs.start_task(taskDefinition=big, containerInstances=[node])
    assert out["failures"][0] == {"arn": node, "reason": "RESOURCE:MEMORY", "detail": out["failures"][0]["detail"]}
    with pytest.raises(ClientError) as e:
        ecs.start_task(taskDefinition=family, containerInstances=[])
    assert "containerInstances must name 1 to 10" in e.value.response["Error"]["Message"]
