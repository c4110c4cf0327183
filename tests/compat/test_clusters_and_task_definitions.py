"""Clusters, task definitions and tags through the real boto3 and aws-cli."""

import json
import os
import subprocess
import uuid

import pytest
from botocore.exceptions import ClientError

from conftest import REGION, ROOT, wait_for


def uniq(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def error_code(excinfo):
    return excinfo.value.response["Error"]["Code"]


def error_message(excinfo):
    return excinfo.value.response["Error"]["Message"]


HELLO = os.path.join(ROOT, "guests", "dist", "hello-http.wasm")


def taskdef(family, **extra):
    doc = {
        "family": family,
        "containerDefinitions": [
            {
                "name": "web",
                "image": HELLO,
                "memory": 64,
                "cpu": 256,
                "essential": True,
                "environment": [{"name": "GREETING", "value": "ahoy"}],
                "portMappings": [{"containerPort": 8080, "protocol": "tcp"}],
                "dockerLabels": {"skiff.timeout": "2s", "team": "edge"},
                "healthCheck": {"command": ["CMD", "GET /healthz"], "interval": 10, "retries": 2},
            }
        ],
    }
    doc.update(extra)
    return doc


# ---------------------------------------------------------------- clusters


def test_default_cluster_exists_with_long_arn(ecs):
    out = ecs.describe_clusters()
    assert out["failures"] == []
    (c,) = out["clusters"]
    assert c["clusterName"] == "default"
    assert c["status"] == "ACTIVE"
    assert c["clusterArn"] == f"arn:aws:ecs:{REGION}:000000000000:cluster/default"


def test_cluster_lifecycle(ecs):
    name = uniq("c")
    created = ecs.create_cluster(clusterName=name, tags=[{"key": "env", "value": "test"}])["cluster"]
    assert created["status"] == "ACTIVE"
    # Idempotent, as ECS.
    again = ecs.create_cluster(clusterName=name)["cluster"]
    assert again["clusterArn"] == created["clusterArn"]
    # By name and by ARN; unknown names are MISSING failures.
    out = ecs.describe_clusters(clusters=[name, created["clusterArn"], "nope"], include=["TAGS"])
    assert [c["clusterName"] for c in out["clusters"]] == [name, name]
    assert out["clusters"][0]["tags"] == [{"key": "env", "value": "test"}]
    assert out["failures"] == [{"arn": f"arn:aws:ecs:{REGION}:000000000000:cluster/nope", "reason": "MISSING"}]
    assert created["clusterArn"] in ecs.list_clusters()["clusterArns"]
    deleted = ecs.delete_cluster(cluster=name)["cluster"]
    assert deleted["status"] == "INACTIVE"
    assert created["clusterArn"] not in ecs.list_clusters()["clusterArns"]
    assert ecs.describe_clusters(clusters=[name])["clusters"][0]["status"] == "INACTIVE"
    with pytest.raises(ClientError) as e:
        ecs.delete_cluster(cluster=name)
    assert error_code(e) == "ClusterNotFoundException"


def test_update_cluster_settings_as_terraform_does(ecs):
    name = uniq("upd")
    arn = ecs.create_cluster(clusterName=name, settings=[{"name": "containerInsights", "value": "disabled"}])["cluster"]["clusterArn"]
    ecs.update_cluster(cluster=arn, settings=[{"name": "containerInsights", "value": "enabled"}])
    out = ecs.describe_clusters(clusters=[arn], include=["TAGS", "CONFIGURATIONS", "SETTINGS"])["clusters"][0]
    assert out["settings"] == [{"name": "containerInsights", "value": "enabled"}]
    ecs.update_cluster_settings(cluster=name, settings=[{"name": "containerInsights", "value": "disabled"}])
    assert ecs.describe_clusters(clusters=[name])["clusters"][0]["settings"][0]["value"] == "disabled"


def test_bad_cluster_name_is_invalid_parameter(ecs):
    with pytest.raises(ClientError) as e:
        ecs.create_cluster(clusterName="has spaces")
    assert error_code(e) == "InvalidParameterException"
    assert "clusterName" in error_message(e)


def test_list_clusters_paginates(ecs):
    names = [uniq("page") for _ in range(7)]
    for n in names:
        ecs.create_cluster(clusterName=n)
    first = ecs.list_clusters(maxResults=2)
    assert len(first["clusterArns"]) == 2 and "nextToken" in first
    pages = ecs.get_paginator("list_clusters").paginate(PaginationConfig={"PageSize": 2})
    arns = [a for p in pages for a in p["clusterArns"]]
    assert len(arns) == len(set(arns))
    for n in names:
        assert f"arn:aws:ecs:{REGION}:000000000000:cluster/{n}" in arns
    with pytest.raises(ClientError) as e:
        ecs.list_clusters(maxResults=101)
    assert error_code(e) == "InvalidParameterException"


# ---------------------------------------------------------------- task definitions


def test_register_round_trips_every_field(ecs):
    family = uniq("rt")
    doc = taskdef(family, requiresCompatibilities=["FARGATE"], networkMode="awsvpc", cpu="256", memory="512")
    out = ecs.register_task_definition(**doc, tags=[{"key": "k", "value": "v"}])
    td = out["taskDefinition"]
    assert td["revision"] == 1
    assert td["status"] == "ACTIVE"
    assert td["taskDefinitionArn"] == f"arn:aws:ecs:{REGION}:000000000000:task-definition/{family}:1"
    assert out["tags"] == [{"key": "k", "value": "v"}]
    for ref in (family, f"{family}:1", td["taskDefinitionArn"]):
        got = ecs.describe_task_definition(taskDefinition=ref, include=["TAGS"])
        # What was registered reads back as it was, with the members AWS
        # always returns filled in where it was silent (the API reference's
        # DescribeTaskDefinition example: empty lists, essential, cpu 0).
        assert got["taskDefinition"]["containerDefinitions"] == [
            {"mountPoints": [], "volumesFrom": [], **c} for c in doc["containerDefinitions"]
        ]
        assert got["taskDefinition"]["volumes"] == []
        assert got["taskDefinition"]["placementConstraints"] == []
        for field in ("family", "requiresCompatibilities", "networkMode", "cpu", "memory"):
            assert got["taskDefinition"][field] == doc[field]
        assert got["tags"] == [{"key": "k", "value": "v"}]
        assert "registeredAt" in got["taskDefinition"]


def test_members_aws_always_returns_are_there_when_not_registered(ecs):
    family = uniq("bare")
    ecs.register_task_definition(
        family=family, containerDefinitions=[{"name": "main", "image": HELLO, "memory": 32}]
    )
    td = ecs.describe_task_definition(taskDefinition=family)["taskDefinition"]
    assert td["volumes"] == [] and td["placementConstraints"] == []
    assert td["containerDefinitions"] == [
        {
            "name": "main",
            "image": HELLO,
            "memory": 32,
            "cpu": 0,
            "essential": True,
            "environment": [],
            "mountPoints": [],
            "portMappings": [],
            "volumesFrom": [],
        }
    ]


def test_list_task_definitions_family_prefix_is_the_whole_family(ecs):
    # ECS documents ListTaskDefinitions' familyPrefix as "the full family
    # name"; ListTaskDefinitionFamilies' as a prefix.
    family = uniq("fam")
    for f in (family, family + "x"):
        ecs.register_task_definition(family=f, containerDefinitions=[{"name": "main", "image": HELLO, "memory": 32}])
    arns = ecs.list_task_definitions(familyPrefix=family)["taskDefinitionArns"]
    assert arns == [f"arn:aws:ecs:{REGION}:000000000000:task-definition/{family}:1"]
    families = ecs.list_task_definition_families(familyPrefix=family)["families"]
    assert families == [family, family + "x"]


def test_revisions_list_and_deregister(ecs):
    family = uniq("rev")
    for _ in range(3):
        ecs.register_task_definition(**taskdef(family))
    arns = ecs.list_task_definitions(familyPrefix=family)["taskDefinitionArns"]
    assert [a.rsplit(":", 1)[1] for a in arns] == ["1", "2", "3"]
    desc = ecs.list_task_definitions(familyPrefix=family, sort="DESC")["taskDefinitionArns"]
    assert desc == list(reversed(arns))
    pages = ecs.get_paginator("list_task_definitions").paginate(familyPrefix=family, PaginationConfig={"PageSize": 1})
    assert [a for p in pages for a in p["taskDefinitionArns"]] == arns
    pages = ecs.get_paginator("list_task_definitions").paginate(
        familyPrefix=family, sort="DESC", PaginationConfig={"PageSize": 2}
    )
    assert [a for p in pages for a in p["taskDefinitionArns"]] == desc
    assert family in ecs.list_task_definition_families(familyPrefix=family)["families"]

    out = ecs.deregister_task_definition(taskDefinition=f"{family}:3")["taskDefinition"]
    assert out["status"] == "INACTIVE" and "deregisteredAt" in out
    # The family now resolves to its latest ACTIVE revision.
    assert ecs.describe_task_definition(taskDefinition=family)["taskDefinition"]["revision"] == 2
    inactive = ecs.list_task_definitions(familyPrefix=family, status="INACTIVE")["taskDefinitionArns"]
    assert inactive == [arns[2]]
    with pytest.raises(ClientError) as e:
        ecs.deregister_task_definition(taskDefinition=family)
    assert error_code(e) == "ClientException" and "revision" in error_message(e)

    for rev in (1, 2):
        ecs.deregister_task_definition(taskDefinition=f"{family}:{rev}")
    assert family not in ecs.list_task_definition_families(familyPrefix=family)["families"]
    assert family in ecs.list_task_definition_families(familyPrefix=family, status="INACTIVE")["families"]


def gone(ecs, reference):
    """Whether a task definition revision was deleted for good."""
    try:
        ecs.describe_task_definition(taskDefinition=reference)
        return False
    except ClientError as e:
        return e.response["Error"]["Code"] == "ClientException"


def aws_cli(server, *args):
    env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIDSKIFFTEST", AWS_SECRET_ACCESS_KEY="x", AWS_DEFAULT_REGION=REGION)
    aws = os.path.join(os.path.dirname(os.path.realpath(__import__("sys").executable)), "aws")
    out = subprocess.run([aws, *args, "--endpoint-url", server.endpoint], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_delete_task_definitions(server, ecs):
    family = uniq("del")
    for _ in range(3):
        ecs.register_task_definition(**taskdef(family))
    svc = uniq("uses")
    ecs.create_service(serviceName=svc, taskDefinition=f"{family}:1", desiredCount=1)
    ecs.get_waiter("services_stable").wait(services=[svc], WaiterConfig={"Delay": 1, "MaxAttempts": 60})

    # An ACTIVE revision is a failure of its own.
    out = ecs.delete_task_definitions(taskDefinitions=[f"{family}:2"])
    assert out["taskDefinitions"] == []
    assert [(f["arn"], f["reason"]) for f in out["failures"]] == [(f"{family}:2", "ACTIVE")]
    assert "deregister" in out["failures"][0]["detail"].lower()

    for rev in (1, 2):
        ecs.deregister_task_definition(taskDefinition=f"{family}:{rev}")
    arn1 = f"arn:aws:ecs:{REGION}:000000000000:task-definition/{family}:1"
    out = ecs.delete_task_definitions(taskDefinitions=[arn1, f"{family}:2", f"{family}:99", family])
    assert [(t["revision"], t["status"]) for t in out["taskDefinitions"]] == [
        (1, "DELETE_IN_PROGRESS"),
        (2, "DELETE_IN_PROGRESS"),
    ]
    assert [(f["arn"], f["reason"]) for f in out["failures"]] == [(f"{family}:99", "MISSING"), (family, "MISSING")]
    # Revision 2 is used by nothing: deleted for good. Revision 1 was
    # looked at first and stays while the service uses it; the service
    # still scales.
    wait_for("revision 2 deleted for good", lambda: gone(ecs, f"{family}:2"), timeout=30)
    described = ecs.describe_task_definition(taskDefinition=f"{family}:1")["taskDefinition"]
    assert described["status"] == "DELETE_IN_PROGRESS"
    # Never usable for new tasks or services.
    with pytest.raises(ClientError) as e:
        ecs.run_task(taskDefinition=f"{family}:1")
    assert error_code(e) == "ClientException" and "DELETE_IN_PROGRESS" in error_message(e)
    assert ecs.list_task_definitions(familyPrefix=family, status="DELETE_IN_PROGRESS")["taskDefinitionArns"] == [arn1]
    ecs.update_service(service=svc, desiredCount=2)
    ecs.get_waiter("services_stable").wait(services=[svc], WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    assert ecs.describe_services(services=[svc])["services"][0]["runningCount"] == 2

    # Once the service is gone, so is revision 1.
    ecs.delete_service(service=svc, force=True)
    wait_for("revision 1 deleted for good", lambda: gone(ecs, f"{family}:1"), timeout=60)
    assert family in ecs.list_task_definition_families(familyPrefix=family)["families"]

    # Through aws-cli: the last revision; then the family is not listed,
    # and its revisions go on counting.
    aws_cli(server, "ecs", "deregister-task-definition", "--task-definition", f"{family}:3")
    out = aws_cli(server, "ecs", "delete-task-definitions", "--task-definitions", f"{family}:3")
    assert out["taskDefinitions"][0]["status"] == "DELETE_IN_PROGRESS" and out["failures"] == []
    wait_for("revision 3 deleted for good", lambda: gone(ecs, f"{family}:3"), timeout=30)
    assert family not in ecs.list_task_definition_families(familyPrefix=family, status="ALL")["families"]
    assert ecs.register_task_definition(**taskdef(family))["taskDefinition"]["revision"] == 4

    with pytest.raises(ClientError) as e:
        ecs.delete_task_definitions(taskDefinitions=[f"{family}:{n}" for n in range(1, 12)])
    assert error_code(e) == "InvalidParameterException" and "taskDefinitions" in error_message(e)


def unique_module(directory):
    """hello-http with a custom section of its own: bytes no other test
    registers. Returns its path and SHA-256."""
    import hashlib

    name, data = b"skiff-test", uuid.uuid4().hex.encode()
    payload = bytes([len(name)]) + name + data
    with open(HELLO, "rb") as f:
        module = f.read() + b"\x00" + bytes([len(payload)]) + payload
    path = os.path.join(directory, f"m-{uuid.uuid4().hex[:8]}.wasm")
    with open(path, "wb") as f:
        f.write(module)
    return path, hashlib.sha256(module).hexdigest()


def test_a_deleted_revision_takes_its_kept_module_along(server, ecs):
    path, digest = unique_module(server.data_dir)
    blob = os.path.join(server.data_dir, "blobs", digest)
    family = uniq("blob")
    doc = taskdef(family)
    doc["containerDefinitions"][0]["image"] = path
    for _ in range(2):
        ecs.register_task_definition(**doc)
    assert os.path.exists(blob), "kept by digest for other nodes"
    for rev in (1, 2):
        ecs.deregister_task_definition(taskDefinition=f"{family}:{rev}")
    ecs.delete_task_definitions(taskDefinitions=[f"{family}:1", f"{family}:2"])
    for rev in (1, 2):
        wait_for(f"revision {rev} deleted for good", lambda: gone(ecs, f"{family}:{rev}"), timeout=30)
    # (That a blob a task definition still names stays is the unit test
    # of Blobs::sweep.)
    wait_for("the module's blob removed", lambda: not os.path.exists(blob), timeout=30)


def test_validation_names_the_field(ecs):
    doc = taskdef(uniq("bad"))
    doc["containerDefinitions"][0]["memory"] = 0
    with pytest.raises(ClientError) as e:
        ecs.register_task_definition(**doc)
    assert error_code(e) == "ClientException"
    assert error_message(e) == "containerDefinitions[0].memory: must be at least 6 MiB, got 0"


def test_describe_unknown_task_definition(ecs):
    with pytest.raises(ClientError) as e:
        ecs.describe_task_definition(taskDefinition="no-such-family")
    assert error_code(e) == "ClientException"
    assert "no-such-family" in error_message(e)


# ---------------------------------------------------------------- tags


def test_tags_on_task_definitions_and_clusters(ecs):
    td = ecs.register_task_definition(**taskdef(uniq("tag")))["taskDefinition"]["taskDefinitionArn"]
    ecs.tag_resource(resourceArn=td, tags=[{"key": "a", "value": "1"}, {"key": "b", "value": "2"}])
    ecs.tag_resource(resourceArn=td, tags=[{"key": "a", "value": "3"}])
    assert ecs.list_tags_for_resource(resourceArn=td)["tags"] == [
        {"key": "a", "value": "3"},
        {"key": "b", "value": "2"},
    ]
    ecs.untag_resource(resourceArn=td, tagKeys=["a"])
    assert ecs.list_tags_for_resource(resourceArn=td)["tags"] == [{"key": "b", "value": "2"}]

    cluster = ecs.create_cluster(clusterName=uniq("tagc"))["cluster"]["clusterArn"]
    ecs.tag_resource(resourceArn=cluster, tags=[{"key": "team", "value": "edge"}])
    assert ecs.list_tags_for_resource(resourceArn=cluster)["tags"] == [{"key": "team", "value": "edge"}]

    with pytest.raises(ClientError) as e:
        ecs.list_tags_for_resource(resourceArn=f"arn:aws:ecs:{REGION}:000000000000:cluster/absent")
    assert error_code(e) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        ecs.tag_resource(resourceArn=td, tags=[{"key": "aws:reserved", "value": "x"}])
    assert error_code(e) == "InvalidParameterException"


# ---------------------------------------------------------------- protocol


def test_unsupported_action_names_it(ecs):
    with pytest.raises(ClientError) as e:
        ecs.describe_task_sets(cluster="default", service="web")
    assert error_code(e) == "UnsupportedFeatureException"
    assert "DescribeTaskSets" in error_message(e)


def test_aws_cli_works_unchanged(server):
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID="AKIDSKIFFTEST",
        AWS_SECRET_ACCESS_KEY="x",
        AWS_DEFAULT_REGION="eu-central-1",
    )
    aws = os.path.join(os.path.dirname(os.path.realpath(__import__("sys").executable)), "aws")
    family = uniq("cli")
    path = os.path.join(server.data_dir, f"{family}.json")
    with open(path, "w") as f:
        json.dump(taskdef(family), f)
    out = subprocess.run(
        [aws, "ecs", "register-task-definition", "--cli-input-json", f"file://{path}", "--endpoint-url", server.endpoint],
        env=env, capture_output=True, text=True, check=True,
    )
    arn = json.loads(out.stdout)["taskDefinition"]["taskDefinitionArn"]
    assert arn == f"arn:aws:ecs:eu-central-1:000000000000:task-definition/{family}:1"
    out = subprocess.run(
        [aws, "ecs", "list-clusters", "--endpoint-url", server.endpoint],
        env=env, capture_output=True, text=True, check=True,
    )
    assert "arn:aws:ecs:eu-central-1:000000000000:cluster/default" in json.loads(out.stdout)["clusterArns"]
    bad = subprocess.run(
        [aws, "ecs", "describe-task-definition", "--task-definition", "absent", "--endpoint-url", server.endpoint],
        env=env, capture_output=True, text=True,
    )
    assert bad.returncode != 0 and "ClientException" in bad.stderr


# ------------------------------------------------------ capacity providers


def plain_taskdef(family):
    """A hello-http task definition without a health check (its tasks count
    as started once RUNNING)."""
    doc = taskdef(family)
    del doc["containerDefinitions"][0]["healthCheck"]
    return doc


def providers_of(ecs, cluster, **filters):
    arns = ecs.list_tasks(cluster=cluster, desiredStatus="RUNNING", **filters)["taskArns"]
    if not arns:
        return []
    tasks = ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"]
    return sorted((t.get("capacityProviderName"), t["lastStatus"], t["launchType"]) for t in tasks)


def test_capacity_providers_spread_tasks_as_ecs_does(server, ecs):
    """What Terraform's aws_ecs_cluster_capacity_providers and a service's
    capacity_provider_strategy call: FARGATE and FARGATE_SPOT, the
    cluster's default strategy, base and weight, and a provider in use."""
    name, family = uniq("cp"), uniq("cp")
    ecs.create_cluster(clusterName=name)
    (c,) = ecs.describe_clusters(clusters=[name])["clusters"]
    assert c["capacityProviders"] == [] and c["defaultCapacityProviderStrategy"] == []

    with pytest.raises(ClientError) as e:
        ecs.put_cluster_capacity_providers(
            cluster=name, capacityProviders=["FARGATE", "my-asg"], defaultCapacityProviderStrategy=[])
    assert "capacityProviders[1]" in error_message(e) and "FARGATE_SPOT" in error_message(e)
    with pytest.raises(ClientError) as e:
        ecs.put_cluster_capacity_providers(
            cluster=name, capacityProviders=["FARGATE"],
            defaultCapacityProviderStrategy=[{"capacityProvider": "FARGATE_SPOT", "weight": 1}])
    assert "not associated" in error_message(e), error_message(e)
    strategy = [{"capacityProvider": "FARGATE", "base": 1, "weight": 1},
                {"capacityProvider": "FARGATE_SPOT", "weight": 3}]
    c = ecs.put_cluster_capacity_providers(
        cluster=name, capacityProviders=["FARGATE", "FARGATE_SPOT"],
        defaultCapacityProviderStrategy=strategy)["cluster"]
    assert c["capacityProviders"] == ["FARGATE", "FARGATE_SPOT"]
    assert c["defaultCapacityProviderStrategy"] == [
        {"capacityProvider": "FARGATE", "base": 1, "weight": 1},
        {"capacityProvider": "FARGATE_SPOT", "base": 0, "weight": 3}]
    (d,) = ecs.describe_clusters(clusters=[name])["clusters"]
    assert d["defaultCapacityProviderStrategy"] == c["defaultCapacityProviderStrategy"]

    found = ecs.describe_capacity_providers(capacityProviders=["FARGATE_SPOT", "my-asg"])
    assert [p["name"] for p in found["capacityProviders"]] == ["FARGATE_SPOT"]
    assert found["capacityProviders"][0]["status"] == "ACTIVE"
    assert found["failures"][0]["reason"] == "MISSING"
    assert {p["name"] for p in aws_cli(server, "ecs", "describe-capacity-providers")["capacityProviders"]} == {
        "FARGATE", "FARGATE_SPOT"}
    with pytest.raises(ClientError) as e:
        ecs.create_capacity_provider(name="mine", autoScalingGroupProvider={
            "autoScalingGroupArn": "arn:aws:autoscaling:us-east-1:000000000000:autoScalingGroup:x:autoScalingGroupName/x"})
    assert error_code(e) == "UnsupportedFeatureException" and "FARGATE" in error_message(e)

    ecs.register_task_definition(**plain_taskdef(family))
    with pytest.raises(ClientError) as e:
        ecs.create_service(cluster=name, serviceName="both", taskDefinition=family, desiredCount=1,
                           launchType="FARGATE",
                           capacityProviderStrategy=[{"capacityProvider": "FARGATE", "weight": 1}])
    assert error_code(e) == "InvalidParameterException"

    # No launch type and no strategy: the cluster's default, base first,
    # then 1:3.
    svc = ecs.create_service(cluster=name, serviceName="web", taskDefinition=family, desiredCount=5)["service"]
    assert "launchType" not in svc
    assert svc["capacityProviderStrategy"] == c["defaultCapacityProviderStrategy"]
    assert svc["deployments"][0]["capacityProviderStrategy"] == c["defaultCapacityProviderStrategy"]
    seen = wait_for("5 running tasks", lambda: (lambda p: p if len(p) == 5 else None)(
        providers_of(ecs, name, serviceName="web")))
    assert [p for p, _, _ in seen] == ["FARGATE"] * 2 + ["FARGATE_SPOT"] * 3, seen
    assert {lt for _, _, lt in seen} == {"FARGATE"}

    # A provider a service uses cannot be taken off the cluster.
    with pytest.raises(ClientError) as e:
        ecs.put_cluster_capacity_providers(
            cluster=name, capacityProviders=["FARGATE"],
            defaultCapacityProviderStrategy=[{"capacityProvider": "FARGATE", "weight": 1}])
    assert error_code(e) == "ResourceInUseException" and '"web"' in error_message(e), error_message(e)

    # RunTask with its own strategy.
    run = ecs.run_task(cluster=name, taskDefinition=family, count=2,
                       capacityProviderStrategy=[{"capacityProvider": "FARGATE_SPOT", "weight": 1}])
    assert run["failures"] == []
    assert [t["capacityProviderName"] for t in run["tasks"]] == ["FARGATE_SPOT"] * 2

    # A new strategy deploys: the service's tasks end up all on FARGATE.
    out = ecs.update_service(cluster=name, service="web",
                             capacityProviderStrategy=[{"capacityProvider": "FARGATE", "weight": 1}])["service"]
    assert out["deployments"][0]["status"] == "PRIMARY" and len(out["deployments"]) == 2
    wait_for("the service's tasks all on FARGATE", lambda: (lambda p: p == [("FARGATE", "RUNNING", "FARGATE")] * 5)(
        providers_of(ecs, name, serviceName="web")), timeout=90)

    # Once the RunTask tasks stop, nothing uses FARGATE_SPOT.
    for t in run["tasks"]:
        ecs.stop_task(cluster=name, task=t["taskArn"])
    wait_for("the run tasks to stop", lambda: all(
        t["lastStatus"] == "STOPPED"
        for t in ecs.describe_tasks(cluster=name, tasks=[t["taskArn"] for t in run["tasks"]])["tasks"]))
    c = ecs.put_cluster_capacity_providers(
        cluster=name, capacityProviders=["FARGATE"], defaultCapacityProviderStrategy=[])["cluster"]
    assert c["capacityProviders"] == ["FARGATE"] and c["defaultCapacityProviderStrategy"] == []
    ecs.delete_service(cluster=name, service="web", force=True)


# --------------------------------------------------------- account settings


def test_account_settings_as_terraform_and_aws_cli_use_them(server, ecs):
    """aws_ecs_account_setting_default puts the account's default and reads
    the effective setting back; a principal's own setting wins over it."""
    root = "arn:aws:iam::000000000000:root"
    alice = "arn:aws:iam::000000000000:user/alice"
    try:
        out = ecs.put_account_setting_default(name="containerInsights", value="enabled")["setting"]
        assert out == {"name": "containerInsights", "value": "enabled", "principalArn": root, "type": "user"}
        (s,) = ecs.list_account_settings(name="containerInsights", effectiveSettings=True)["settings"]
        assert (s["value"], s["principalArn"]) == ("enabled", root)

        # A cluster created without its own setting gets the account's.
        name = uniq("insights")
        c = ecs.create_cluster(clusterName=name)["cluster"]
        assert c["settings"] == [{"name": "containerInsights", "value": "enabled"}]
        c = ecs.create_cluster(clusterName=uniq("own"), settings=[{"name": "containerInsights", "value": "disabled"}])
        assert c["cluster"]["settings"] == [{"name": "containerInsights", "value": "disabled"}]

        # A principal's own setting, then deleted: the default applies again.
        ecs.put_account_setting(name="containerInsights", value="disabled", principalArn=alice)
        (s,) = ecs.list_account_settings(name="containerInsights", effectiveSettings=True, principalArn=alice)["settings"]
        assert (s["value"], s["principalArn"]) == ("disabled", alice)
        assert [x["name"] for x in ecs.list_account_settings(principalArn=alice)["settings"]] == ["containerInsights"]
        ecs.delete_account_setting(name="containerInsights", principalArn=alice)
        (s,) = ecs.list_account_settings(name="containerInsights", effectiveSettings=True, principalArn=alice)["settings"]
        assert (s["value"], s["principalArn"]) == ("enabled", root)

        # ECS's defaults, paged; filtered by value.
        first = ecs.list_account_settings(effectiveSettings=True, maxResults=5)
        assert len(first["settings"]) == 5 and "nextToken" in first
        rest = ecs.list_account_settings(effectiveSettings=True, nextToken=first["nextToken"])
        every = {s["name"]: s for s in first["settings"] + rest["settings"]}
        assert every["taskLongArnFormat"]["value"] == "enabled"
        assert every["taskLongArnFormat"]["type"] == "aws_managed"
        assert every["fargateTaskRetirementWaitPeriod"]["value"] == "7"
        on = ecs.list_account_settings(effectiveSettings=True, value="enabled")["settings"]
        assert {s["name"] for s in on} >= {"containerInsights", "serviceLongArnFormat"}
        cli = aws_cli(server, "ecs", "list-account-settings", "--effective-settings", "--name", "containerInsights")
        assert cli["settings"][0]["value"] == "enabled"

        # Terraform's destroy disables the setting, and takes "You can no
        # longer disable" for the long ARN formats.
        with pytest.raises(ClientError) as e:
            ecs.put_account_setting_default(name="serviceLongArnFormat", value="disabled")
        assert error_code(e) == "InvalidParameterException"
        assert "You can no longer disable" in error_message(e)
        with pytest.raises(ClientError) as e:
            ecs.put_account_setting(name="containerInsights", value="maybe")
        assert "enhanced" in error_message(e)
        with pytest.raises(ClientError) as e:
            ecs.put_account_setting(name="nope", value="enabled")
        assert "awsvpcTrunking" in error_message(e)
        with pytest.raises(ClientError) as e:
            ecs.put_account_setting(name="containerInsights", value="enabled",
                                    principalArn="arn:aws:iam::111111111111:user/bob")
        assert "principalArn" in error_message(e)
    finally:
        try:
            ecs.delete_account_setting(name="containerInsights", principalArn=root)
        except ClientError:
            pass
    # Deleted, the account default no longer decides: ECS's applies.
    (s,) = ecs.list_account_settings(name="containerInsights", effectiveSettings=True)["settings"]
    assert (s["value"], s["type"]) == ("disabled", "aws_managed")
    assert "settings" not in ecs.create_cluster(clusterName=uniq("plain"))["cluster"]
