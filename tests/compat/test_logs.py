"""Container logs through CloudWatch Logs' API (the awslogs driver): boto3's
logs client and `aws logs` read groups, streams and events unchanged."""

import json
import os
import subprocess

from conftest import ROOT, uniq

DIST = os.path.join(ROOT, "guests", "dist")
AWS = os.path.join(ROOT, ".venv", "bin", "aws")


def run_logged(ecs, group, prefix, command):
    family = uniq("logged")
    ecs.register_task_definition(
        family=family,
        containerDefinitions=[
            {
                "name": "job",
                "image": os.path.join(DIST, "echo.wasm"),
                "memory": 16,
                "command": command,
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {"awslogs-group": group, "awslogs-stream-prefix": prefix, "awslogs-region": "us-west-2"},
                },
            }
        ],
    )
    task = ecs.run_task(taskDefinition=family)["tasks"][0]["taskArn"]
    ecs.get_waiter("tasks_stopped").wait(tasks=[task], WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    return task.split("/")[-1]


def test_logs_read_through_cloudwatch_logs_api(server, ecs):
    logs = server.client("logs")
    group = f"/ecs/{uniq('app')}"
    t1 = run_logged(ecs, group, "web", ["first-run", "--stderr", "oops ERROR db down"])
    t2 = run_logged(ecs, group, "web", ["second-run"])
    s1, s2 = f"web/job/{t1}", f"web/job/{t2}"

    groups = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
    assert [g["logGroupName"] for g in groups] == [group]
    assert groups[0]["storedBytes"] > 0

    streams = logs.describe_log_streams(logGroupName=group)["logStreams"]
    assert sorted(s["logStreamName"] for s in streams) == sorted([s1, s2])
    assert all("lastEventTimestamp" in s for s in streams)
    newest = logs.describe_log_streams(logGroupName=group, orderBy="LastEventTime", descending=True, limit=1)
    assert len(newest["logStreams"]) == 1 and "nextToken" in newest

    events = logs.get_log_events(logGroupName=group, logStreamName=s1, startFromHead=True)
    messages = [e["message"] for e in events["events"]]
    assert "argv[1]=first-run" in messages
    assert "oops ERROR db down" in messages  # stderr goes to the same stream
    assert all(e["timestamp"] > 0 for e in events["events"])
    # Past the end, the forward token comes back unchanged.
    again = logs.get_log_events(
        logGroupName=group, logStreamName=s1, startFromHead=True, nextToken=events["nextForwardToken"]
    )
    assert again["events"] == [] and again["nextForwardToken"] == events["nextForwardToken"]
    two = logs.get_log_events(logGroupName=group, logStreamName=s1, limit=2)
    assert [e["message"] for e in two["events"]] == messages[-2:]

    hits = logs.filter_log_events(logGroupName=group, filterPattern="ERROR db")["events"]
    # The argv line and the stderr line of the first task hold both terms.
    assert sorted((e["logStreamName"], e["message"]) for e in hits) == [
        (s1, "argv[3]=oops ERROR db down"),
        (s1, "oops ERROR db down"),
    ]
    assert logs.filter_log_events(logGroupName=group, filterPattern="ERROR cache")["events"] == []
    both = logs.filter_log_events(logGroupName=group, filterPattern='"argv[1]="')["events"]
    assert sorted(e["message"] for e in both) == ["argv[1]=first-run", "argv[1]=second-run"]
    only = logs.filter_log_events(logGroupName=group, logStreamNames=[s2])["events"]
    assert all(e["logStreamName"] == s2 for e in only) and only

    try:
        logs.describe_log_streams(logGroupName="/no/such/group")
        raise AssertionError("a missing group was found")
    except logs.exceptions.ResourceNotFoundException:
        pass

    # aws-cli reads the same.
    env = dict(os.environ, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y", AWS_DEFAULT_REGION="us-west-2")
    out = subprocess.run(
        [AWS, "--endpoint-url", server.endpoint, "logs", "get-log-events", "--log-group-name", group,
         "--log-stream-name", s2, "--start-from-head"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    assert "argv[1]=second-run" in [e["message"] for e in json.loads(out)["events"]]


def test_awslogs_needs_a_group_and_a_prefix(ecs):
    import pytest
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as e:
        ecs.register_task_definition(
            family=uniq("bad"),
            containerDefinitions=[
                {
                    "name": "job",
                    "image": os.path.join(DIST, "echo.wasm"),
                    "memory": 16,
                    "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "/ecs/x"}},
                }
            ],
        )
    assert "logConfiguration.options.awslogs-stream-prefix" in e.value.response["Error"]["Message"]


def test_task_logs_read_from_a_cursor(server, ecs):
    """GET /logs/CLUSTER/TASK answers with x-skiff-log-cursor; given back
    as from=, it reads only the lines written since (the dashboard's
    follow)."""
    import urllib.error
    import urllib.request

    import httpx

    from conftest import wait_for

    family, svc = uniq("follow"), uniq("follow")
    ecs.register_task_definition(family=family, containerDefinitions=[
        {"name": "web", "image": os.path.join(DIST, "hello-http.wasm"), "memory": 32}])
    ecs.create_service(serviceName=svc, taskDefinition=family, desiredCount=1)
    ecs.get_waiter("services_stable").wait(services=[svc], WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    task = ecs.list_tasks(serviceName=svc)["taskArns"][0].split("/")[-1]
    url = f"{server.endpoint}/logs/default/{task}"

    def read(cursor=None):
        with urllib.request.urlopen(url + (f"?from={cursor}" if cursor else ""), timeout=30) as r:
            return r.read().decode(), r.headers["x-skiff-log-cursor"]

    def ask(ms):
        ip, port = server.ingress
        r = httpx.get(f"http://{ip}:{port}/sleep?ms={ms}", headers={"Host": f"{svc}.localhost"}, timeout=30)
        assert r.status_code == 200

    ask(1)
    wait_for("the first line", lambda: "web stdout sleeping 1 ms" in read()[0])
    _, cursor = read()
    assert cursor.startswith("web~"), cursor
    assert read(cursor) == ("", cursor), "nothing new: nothing read"
    ask(2)
    ask(3)
    wait_for("the new lines", lambda: read(cursor)[0].count("\n") == 2)
    text, after = read(cursor)
    assert text == "web stdout sleeping 2 ms\nweb stdout sleeping 3 ms\n"
    assert after != cursor and read(after) == ("", after)

    try:
        urllib.request.urlopen(url + "?from=web~x", timeout=30)
        raise AssertionError("a bad cursor was read")
    except urllib.error.HTTPError as e:
        assert e.code == 400 and "from" in e.read().decode()
    ecs.delete_service(service=svc, force=True)


def test_log_groups_made_retained_tagged_and_deleted_as_terraform_does(server, ecs):
    """aws_cloudwatch_log_group's calls: CreateLogGroup (with tags), then
    PutRetentionPolicy, DescribeLogGroups by prefix, the tag calls,
    DeleteRetentionPolicy and DeleteLogGroup; a task then writes to the
    group it made."""
    logs = server.client("logs")
    group = f"/ecs/{uniq('tf')}"
    logs.create_log_group(logGroupName=group, tags={"team": "edge"}, logGroupClass="STANDARD")
    try:
        logs.create_log_group(logGroupName=group)
        raise AssertionError("a second CreateLogGroup succeeded")
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    for bad, words in [
        ({"logGroupName": "no spaces"}, "logGroupName"),
        ({"logGroupName": group + "x", "kmsKeyId": "arn:aws:kms:us-west-2:1:key/k"}, "kmsKeyId"),
        ({"logGroupName": group + "y", "logGroupClass": "INFREQUENT_ACCESS"}, "logGroupClass"),
    ]:
        try:
            logs.create_log_group(**bad)
            raise AssertionError(f"{bad} was taken")
        except logs.exceptions.InvalidParameterException as e:
            assert words in str(e)
    # Created, not yet written to: it is described, with no streams.
    [g] = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
    assert g["logGroupName"] == group and "retentionInDays" not in g
    assert logs.describe_log_streams(logGroupName=group)["logStreams"] == []

    logs.put_retention_policy(logGroupName=group, retentionInDays=7)
    [g] = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
    assert g["retentionInDays"] == 7
    try:
        logs.put_retention_policy(logGroupName=group, retentionInDays=8)
        raise AssertionError("8 days was taken")
    except logs.exceptions.InvalidParameterException as e:
        assert "retentionInDays" in str(e)

    arn = g["logGroupArn"]
    assert logs.list_tags_for_resource(resourceArn=arn)["tags"] == {"team": "edge"}
    logs.tag_resource(resourceArn=arn, tags={"env": "prod"})
    logs.untag_resource(resourceArn=arn, tagKeys=["team"])
    assert logs.list_tags_log_group(logGroupName=group)["tags"] == {"env": "prod"}

    # A task writes to it; its events are within the retention.
    t = run_logged(ecs, group, "p", ["into-made-group"])
    events = logs.get_log_events(logGroupName=group, logStreamName=f"p/job/{t}", startFromHead=True)["events"]
    assert "argv[1]=into-made-group" in [e["message"] for e in events]
    [g] = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
    assert g["retentionInDays"] == 7 and g["storedBytes"] > 0

    logs.delete_retention_policy(logGroupName=group)
    assert "retentionInDays" not in logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0]
    logs.delete_log_group(logGroupName=group)
    assert logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"] == []
    for call in (lambda: logs.delete_log_group(logGroupName=group),
                 lambda: logs.describe_log_streams(logGroupName=group),
                 lambda: logs.put_retention_policy(logGroupName=group, retentionInDays=1)):
        try:
            call()
            raise AssertionError("a deleted group was found")
        except logs.exceptions.ResourceNotFoundException:
            pass
