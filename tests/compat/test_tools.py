"""Tools written for ECS, not for skiff, driving a real skiff server with
no change on their side: ecs-deploy (from PyPI, pinned in
requirements.txt), the most used ECS deploy CLI, pointed at skiff by
AWS_ENDPOINT_URL_ECS as it would be at any ECS endpoint.

Its `cron` command needs CloudWatch Events, which skiff does not serve."""

import os
import subprocess

import pytest

from conftest import REGION, ROOT, uniq, wait_for

DIST = os.path.join(ROOT, "guests", "dist")
ECS_DEPLOY = os.path.join(ROOT, ".venv", "bin", "ecs")


def ecs_deploy(server, *args, timeout=180):
    """Runs `ecs ARGS...` (ecs-deploy) against `server`; its result."""
    env = dict(os.environ)
    env.update(
        AWS_ACCESS_KEY_ID="AKIDSKIFFTEST",
        AWS_SECRET_ACCESS_KEY="not-checked-yet",
        AWS_DEFAULT_REGION=REGION,
        AWS_ENDPOINT_URL_ECS=server.endpoint,
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        AWS_MAX_ATTEMPTS="1",
    )
    return subprocess.run(
        [ECS_DEPLOY, *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def service(ecs, cluster, name):
    return ecs.describe_services(cluster=cluster, services=[name])["services"][0]


def running_on(ecs, cluster, name, td_arn):
    """The service's RUNNING tasks of the task definition `td_arn`."""
    arns = ecs.list_tasks(cluster=cluster, serviceName=name)["taskArns"]
    if not arns:
        return []
    tasks = ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"]
    return [t for t in tasks if t["lastStatus"] == "RUNNING" and t["taskDefinitionArn"] == td_arn]


def env_of(td, container="web"):
    c = next(c for c in td["containerDefinitions"] if c["name"] == container)
    return {e["name"]: e["value"] for e in c.get("environment", [])}


@pytest.fixture()
def deployed(server, ecs):
    """A cluster with a service of one hello-http task, RUNNING."""
    cluster = uniq("tools")
    family = uniq("tools")
    ecs.create_cluster(clusterName=cluster)
    td = ecs.register_task_definition(
        family=family,
        containerDefinitions=[
            {
                "name": "web",
                "image": os.path.join(DIST, "hello-http.wasm"),
                "memory": 32,
                "environment": [{"name": "GREETING", "value": "ahoy"}],
            }
        ],
    )["taskDefinition"]
    name = uniq("svc")
    ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=td["taskDefinitionArn"], desiredCount=1)
    wait_for("the service's task RUNNING", lambda: running_on(ecs, cluster, name, td["taskDefinitionArn"]))
    yield cluster, family, name
    ecs.delete_service(cluster=cluster, service=name, force=True)


def test_ecs_deploy_deploys_a_new_environment_and_waits(server, ecs, deployed):
    cluster, family, name = deployed
    out = ecs_deploy(server, "deploy", cluster, name, "-e", "web", "GREETING", "hello", "--timeout", "120")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Deployment successful" in out.stdout
    svc = service(ecs, cluster, name)
    assert svc["taskDefinition"].endswith(f"task-definition/{family}:2")
    td = ecs.describe_task_definition(taskDefinition=svc["taskDefinition"])["taskDefinition"]
    assert env_of(td) == {"GREETING": "hello"}
    # ecs-deploy waited for the new revision to run alone, as it does on ECS.
    assert len(svc["deployments"]) == 1
    assert running_on(ecs, cluster, name, svc["taskDefinition"])

    # diff: what changed between the two revisions, read back from skiff.
    out = ecs_deploy(server, "diff", family, "1", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "GREETING" in out.stdout and "hello" in out.stdout and "ahoy" in out.stdout

    # scale, and wait for the count.
    out = ecs_deploy(server, "scale", cluster, name, "2", "--timeout", "120")
    assert out.returncode == 0, out.stdout + out.stderr
    assert service(ecs, cluster, name)["desiredCount"] == 2
    assert len(running_on(ecs, cluster, name, svc["taskDefinition"])) == 2


def test_ecs_deploy_rolls_back_a_revision_whose_tasks_fail(server, ecs, deployed):
    cluster, family, name = deployed
    # The crash guest, run without a mode, exits 2: every task of the new
    # revision fails, skiff throttles the service's starts and says it is
    # "unable to consistently start tasks", and ecs-deploy rolls back.
    out = ecs_deploy(
        server,
        "deploy", cluster, name, "-i", "web", os.path.join(DIST, "crash.wasm"),
        "--rollback", "--timeout", "120",
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "unable to consistently start tasks" in out.stderr, out.stderr
    assert "Rollback successful" in out.stdout, out.stdout
    svc = service(ecs, cluster, name)
    assert svc["taskDefinition"].endswith(f"task-definition/{family}:1")
    assert running_on(ecs, cluster, name, svc["taskDefinition"])
    # With the rollback ecs-deploy deregisters the failed revision.
    failed = ecs.describe_task_definition(taskDefinition=f"{family}:2")["taskDefinition"]
    assert failed["status"] == "INACTIVE"


def test_ecs_deploy_runs_and_updates_a_task_definition(server, ecs, deployed):
    cluster, family, _ = deployed
    # run: RunTask with container overrides, started by "ECS Deploy".
    out = ecs_deploy(server, "run", cluster, f"{family}:1", "-e", "web", "EXTRA", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    arns = ecs.list_tasks(cluster=cluster, startedBy="ECS Deploy")["taskArns"]
    assert len(arns) == 1
    task = ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"][0]
    env = task["overrides"]["containerOverrides"][0]["environment"]
    assert {"name": "EXTRA", "value": "1"} in env
    ecs.stop_task(cluster=cluster, task=arns[0])

    # update: a new revision of the task definition, no service touched.
    out = ecs_deploy(server, "update", f"{family}:1", "-e", "web", "MODE", "fast")
    assert out.returncode == 0, out.stdout + out.stderr
    latest = ecs.describe_task_definition(taskDefinition=family)["taskDefinition"]
    assert latest["revision"] == 2
    assert env_of(latest) == {"GREETING": "ahoy", "MODE": "fast"}
