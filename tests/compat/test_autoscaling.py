"""Service auto scaling through Application Auto Scaling's API (boto3 and
aws-cli unchanged): scalable targets, target-tracking policies, a load
step that scales a service out and back in, and scale to zero with the
first request held while a task starts."""

import concurrent.futures
import json
import os
import shutil
import subprocess
import tempfile
import time

import botocore.exceptions
import httpx
import pytest

from conftest import ROOT, Server, uniq, wait_for

DIST = os.path.join(ROOT, "guests", "dist")
DIM = "ecs:service:DesiredCount"


@pytest.fixture(scope="module")
def scaled():
    data = tempfile.mkdtemp(prefix="skiff-scaling-")
    s = Server(data, "--scale-in-window", "2s").start()
    yield s
    s.stop()
    shutil.rmtree(data, ignore_errors=True)


def service(ecs, count=1):
    c = {"name": "web", "image": os.path.join(DIST, "hello-http.wasm"), "memory": 32}
    td = ecs.register_task_definition(family=uniq("scale"), containerDefinitions=[c])["taskDefinition"]
    name = uniq("svc")
    ecs.create_service(serviceName=name, taskDefinition=td["taskDefinitionArn"], desiredCount=count)
    if count:
        ecs.get_waiter("services_stable").wait(services=[name], WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    return name


def running(ecs, name):
    s = ecs.describe_services(services=[name])["services"][0]
    return s["desiredCount"], s["runningCount"]


def get(server, name, path="/", timeout=30):
    ip, port = server.ingress
    with httpx.Client(timeout=timeout) as c:
        return c.get(f"http://{ip}:{port}{path}", headers={"Host": f"{name}.default.localhost"})


def test_targets_and_policies_through_boto3_and_aws_cli(scaled):
    ecs, aas = scaled.client(), scaled.client("application-autoscaling")
    name = service(ecs)
    rid = f"service/default/{name}"
    arn = aas.register_scalable_target(ServiceNamespace="ecs", ResourceId=rid, ScalableDimension=DIM,
                                       MinCapacity=1, MaxCapacity=3)["ScalableTargetARN"]
    assert arn.startswith("arn:aws:application-autoscaling:us-west-2:000000000000:scalable-target/")
    t = aas.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[rid])["ScalableTargets"]
    assert [(x["ResourceId"], x["MinCapacity"], x["MaxCapacity"], x["ScalableTargetARN"]) for x in t] == [(rid, 1, 3, arn)]
    # An update changes only what it names.
    aas.register_scalable_target(ServiceNamespace="ecs", ResourceId=rid, ScalableDimension=DIM, MaxCapacity=5)
    t = aas.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[rid])["ScalableTargets"][0]
    assert (t["MinCapacity"], t["MaxCapacity"]) == (1, 5)
    policy = aas.put_scaling_policy(
        PolicyName="cpu", ServiceNamespace="ecs", ResourceId=rid, ScalableDimension=DIM,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 60.0,
            "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"},
            "ScaleOutCooldown": 30, "ScaleInCooldown": 120,
        },
    )
    assert ":scalingPolicy:" in policy["PolicyARN"] and policy["PolicyARN"].endswith(f"resource/ecs/{rid}:policyName/cpu")
    ps = aas.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=rid)["ScalingPolicies"]
    assert [(p["PolicyName"], p["PolicyType"], p["TargetTrackingScalingPolicyConfiguration"]["TargetValue"]) for p in ps] == [
        ("cpu", "TargetTrackingScaling", 60.0)
    ]
    # aws-cli, unchanged.
    env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIDSKIFFTEST", AWS_SECRET_ACCESS_KEY="x", AWS_DEFAULT_REGION="us-west-2")
    aws = os.path.join(ROOT, ".venv", "bin", "aws")
    out = subprocess.run([aws, "application-autoscaling", "describe-scaling-policies", "--service-namespace", "ecs",
                          "--resource-id", rid, "--endpoint-url", scaled.endpoint],
                         capture_output=True, text=True, env=env, check=True).stdout
    assert json.loads(out)["ScalingPolicies"][0]["PolicyName"] == "cpu"
    subprocess.run([aws, "application-autoscaling", "delete-scaling-policy", "--service-namespace", "ecs",
                    "--resource-id", rid, "--scalable-dimension", DIM, "--policy-name", "cpu",
                    "--endpoint-url", scaled.endpoint], capture_output=True, text=True, env=env, check=True)
    assert aas.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=rid)["ScalingPolicies"] == []

    # Errors, in Application Auto Scaling's words.
    def refused(code, words, **kw):
        call = kw.pop("call")
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call(**kw)
        assert e.value.response["Error"]["Code"] == code, e.value.response
        assert words in e.value.response["Error"]["Message"], e.value.response["Error"]["Message"]

    refused("ValidationException", "ServiceNamespace \"dynamodb\" is not served here",
            call=aas.register_scalable_target, ServiceNamespace="dynamodb", ResourceId=rid, ScalableDimension=DIM,
            MinCapacity=1, MaxCapacity=2)
    refused("ValidationException", "ECS service doesn't exist: service \"nope\"",
            call=aas.register_scalable_target, ServiceNamespace="ecs", ResourceId="service/default/nope",
            ScalableDimension=DIM, MinCapacity=1, MaxCapacity=2)
    refused("ValidationException", "MinCapacity (4) must not be greater than MaxCapacity (2)",
            call=aas.register_scalable_target, ServiceNamespace="ecs", ResourceId=rid, ScalableDimension=DIM,
            MinCapacity=4, MaxCapacity=2)
    refused("ValidationException", "is not an ECS service: write service/CLUSTER/SERVICE",
            call=aas.register_scalable_target, ServiceNamespace="ecs", ResourceId="table/x", ScalableDimension=DIM,
            MinCapacity=1, MaxCapacity=2)
    refused("ValidationException", "PredefinedMetricType \"ALBRequestCountPerTarget\" is not one skiff tracks",
            call=aas.put_scaling_policy, PolicyName="alb", ServiceNamespace="ecs", ResourceId=rid,
            ScalableDimension=DIM, PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration={"TargetValue": 10.0, "PredefinedMetricSpecification": {
                "PredefinedMetricType": "ALBRequestCountPerTarget", "ResourceLabel": "x"}})
    refused("ValidationException", "PolicyType \"StepScaling\" is not supported",
            call=aas.put_scaling_policy, PolicyName="s", ServiceNamespace="ecs", ResourceId=rid,
            ScalableDimension=DIM, PolicyType="StepScaling")
    refused("ObjectNotFoundException", "policy name: missing",
            call=aas.delete_scaling_policy, PolicyName="missing", ServiceNamespace="ecs", ResourceId=rid,
            ScalableDimension=DIM)
    aas.deregister_scalable_target(ServiceNamespace="ecs", ResourceId=rid, ScalableDimension=DIM)
    refused("ObjectNotFoundException", "No scalable target registered",
            call=aas.deregister_scalable_target, ServiceNamespace="ecs", ResourceId=rid, ScalableDimension=DIM)
    ecs.delete_service(service=name, force=True)


def concurrency_policy(aas, rid, target, cooldowns=0):
    aas.put_scaling_policy(
        PolicyName="concurrency", ServiceNamespace="ecs", ResourceId=rid, ScalableDimension=DIM,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": float(target),
            "PredefinedMetricSpecification": {"PredefinedMetricType": "SkiffServiceAverageConcurrentRequests"},
            "ScaleOutCooldown": cooldowns, "ScaleInCooldown": cooldowns,
        },
    )


def scalable(server, low, high, per_task):
    """A one-task service scaling between `low` and `high` tasks to keep
    `per_task` requests in flight per task."""
    ecs, aas = server.client(), server.client("application-autoscaling")
    name = service(ecs)
    rid = f"service/default/{name}"
    aas.register_scalable_target(ServiceNamespace="ecs", ResourceId=rid, ScalableDimension=DIM,
                                 MinCapacity=low, MaxCapacity=high)
    concurrency_policy(aas, rid, per_task)
    return ecs, aas, name, rid


def test_a_load_step_scales_out_and_back_in(scaled):
    ecs, aas, name, rid = scalable(scaled, 1, 4, 2)
    # 8 clients each keeping a slow request in flight: 8 concurrent
    # requests against 2 per task asks for 4 tasks.
    stop = time.monotonic() + 60
    done = {"stop": False}

    def client():
        n = 0
        while not done["stop"] and time.monotonic() < stop:
            assert get(scaled, name, "/sleep?ms=200").status_code == 200
            n += 1
        return n

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(client) for _ in range(8)]
        try:
            wait_for("4 running tasks under load", lambda: running(ecs, name) == (4, 4), timeout=45)
        finally:
            done["stop"] = True
        served = sum(f.result() for f in futures)
    assert served > 0
    # Idle: back to MinCapacity after the scale-in window.
    wait_for("the service back at 1 task", lambda: running(ecs, name) == (1, 1), timeout=45)
    acts = aas.describe_scaling_activities(ServiceNamespace="ecs", ResourceId=rid)["ScalingActivities"]
    assert acts[0]["Description"] == "Setting desired count to 1." and acts[0]["StatusCode"] == "Successful"
    assert any(a["Description"] == "Setting desired count to 4." for a in acts)
    assert "requests in flight or held" in acts[-1]["Cause"]
    aas.deregister_scalable_target(ServiceNamespace="ecs", ResourceId=rid, ScalableDimension=DIM)
    ecs.delete_service(service=name, force=True)


def test_scale_to_zero_and_the_held_first_request(scaled):
    ecs, aas, name, rid = scalable(scaled, 0, 2, 5)
    wait_for("the idle service at zero tasks", lambda: running(ecs, name) == (0, 0), timeout=45)
    # The first request waits for a task to start, then is served.
    r = get(scaled, name, "/x")
    assert (r.status_code, r.text) == (200, "you asked for /x\n")
    assert running(ecs, name)[0] == 1
    acts = aas.describe_scaling_activities(ServiceNamespace="ecs", ResourceId=rid)["ScalingActivities"]
    assert [a["Description"] for a in acts[:2]] == ["Setting desired count to 1.", "Setting desired count to 0."]
    assert "1 requests in flight or held over 0 tasks" in acts[0]["Cause"]
    # Back to zero when idle again.
    wait_for("zero tasks again", lambda: running(ecs, name) == (0, 0), timeout=45)
    aas.deregister_scalable_target(ServiceNamespace="ecs", ResourceId=rid, ScalableDimension=DIM)
    ecs.delete_service(service=name, force=True)


def test_no_scale_in_while_a_deployment_rolls(scaled):
    """As ECS suspends scale-in during a deployment: an idle service whose
    deployment cannot finish keeps its count while a control service,
    registered after it, scales in; once the deployment is over, it
    scales in too."""
    ecs, aas, name, rid = scalable(scaled, 0, 2, 5)
    good = ecs.describe_services(services=[name])["services"][0]["taskDefinition"]
    broken = ecs.register_task_definition(
        family=uniq("broken"),
        containerDefinitions=[{"name": "web", "image": "/nonexistent/app.wasm", "memory": 32}],
    )["taskDefinition"]["taskDefinitionArn"]
    ecs.update_service(service=name, taskDefinition=broken)
    _, _, control, control_rid = scalable(scaled, 0, 2, 5)
    wait_for("the control service scaled in to zero", lambda: running(ecs, control) == (0, 0), timeout=45)
    svc = ecs.describe_services(services=[name])["services"][0]
    assert len(svc["deployments"]) == 2 and svc["desiredCount"] == 1, svc["deployments"]
    assert not [a for a in aas.describe_scaling_activities(ServiceNamespace="ecs", ResourceId=rid)["ScalingActivities"]
                if a["Description"] == "Setting desired count to 0."]
    # The deployment ends (back to the task definition that works): now it scales in.
    ecs.update_service(service=name, taskDefinition=good)
    wait_for("the service scaled in once its deployment is over", lambda: running(ecs, name) == (0, 0), timeout=45)
    for r, n in ((rid, name), (control_rid, control)):
        aas.deregister_scalable_target(ServiceNamespace="ecs", ResourceId=r, ScalableDimension=DIM)
        ecs.delete_service(service=n, force=True)
