"""Service Connect, as ECS has it: a service answers on the names its
serviceConnectConfiguration gives in a namespace, and the tasks of every
service in that namespace (any cluster) call it by name over plain HTTP,
in process through skiff's router, with no outbound rule. As on ECS, a
task knows the names its namespace had when it started."""

import pytest
from botocore.exceptions import ClientError

from conftest import uniq, wait_for
from test_ingress import deploy, delete, get, web


def api_port(name="api", port=8080):
    return [{"name": name, "containerPort": port}]


def fetch(server, name, url, cluster="default", method="GET", body=None):
    status, _, out = get(server, name, f"/fetch?url={url}", cluster=cluster, method=method, body=body)
    return status, out.decode()


def test_services_call_each_other_by_name_across_clusters(server, ecs):
    ns = uniq("shop")
    cluster = uniq("sc")
    ecs.create_cluster(clusterName=cluster, serviceConnectDefaults={"namespace": ns})
    backend = deploy(
        ecs,
        [web(portMappings=api_port(), environment=[{"name": "GREETING", "value": "backend"}])],
        count=2,
        cluster=cluster,
        serviceConnectConfiguration={
            "enabled": True,
            "services": [{"portName": "api", "clientAliases": [{"port": 80, "dnsName": "backend"}]}],
        },
    )
    # Without a client alias: DISCOVERYNAME.NAMESPACE at the containerPort.
    orders = deploy(
        ecs,
        [web(portMappings=api_port("orders", 9000), environment=[{"name": "GREETING", "value": "orders"}])],
        cluster=cluster,
        serviceConnectConfiguration={"enabled": True, "services": [
            {"portName": "orders", "timeout": {"perRequestTimeoutSeconds": 1}}]},
    )
    # A client only, in another cluster, naming the namespace itself.
    frontend = deploy(ecs, [web()], serviceConnectConfiguration={"enabled": True, "namespace": ns})
    outsider = deploy(ecs, [web()])

    assert fetch(server, frontend, "http://backend/") == (200, "fetched 200: hello from skiff (backend)\n")
    assert fetch(server, frontend, f"http://orders.{ns}:9000/") == (200, "fetched 200: hello from skiff (orders)\n")
    # Its perRequestTimeoutSeconds bounds the wait for the response.
    status, text = fetch(server, frontend, f"http://orders.{ns}:9000/sleep?ms=3000")
    assert status == 502 and "HttpResponseTimeout" in text, text
    # Bodies go both ways: 200 KiB up, 64 KiB streamed back.
    status, text = fetch(server, frontend, "http://backend/count", method="POST", body=b"x" * 200_000)
    assert (status, text) == (200, "fetched 200: read 200000 bytes\n")
    status, text = fetch(server, frontend, "http://backend/stream?kib=64")
    assert status == 200 and len(text) >= 64 * 1024 and text.startswith("fetched 200: "), text[:200]
    # A service calls its own names too, and the backend's tasks share them.
    assert fetch(server, backend, "http://backend/", cluster=cluster)[1] == "fetched 200: hello from skiff (backend)\n"
    # Another port of the name, HTTPS, a name not in the namespace, or a
    # task outside it: an outbound host like any other, denied.
    for url in ("http://backend:8080/", "https://backend/", "http://payments/"):
        status, text = fetch(server, frontend, url)
        assert status == 502 and "HttpRequestDenied" in text, (url, text)
    status, text = fetch(server, outsider, "http://backend/")
    assert status == 502 and "HttpRequestDenied" in text, text

    # What ECS shows: the configuration in the PRIMARY deployment (where
    # Terraform reads it), and the namespace's services.
    (svc,) = ecs.describe_services(cluster=cluster, services=[backend])["services"]
    (d,) = [d for d in svc["deployments"] if d["status"] == "PRIMARY"]
    assert d["serviceConnectConfiguration"] == {
        "enabled": True,
        "namespace": ns,
        "services": [{"portName": "api", "clientAliases": [{"port": 80, "dnsName": "backend"}]}],
    }
    assert d["serviceConnectResources"] == [{"discoveryName": "api"}]
    arns = ecs.list_services_by_namespace(namespace=ns)["serviceArns"]
    assert sorted(a.rsplit("/", 1)[1] for a in arns) == sorted([backend, orders, frontend])
    assert ecs.list_services_by_namespace(namespace=ns, maxResults=1)["nextToken"]

    # The backend scaled to zero: callers get the router's 503, at once.
    ecs.update_service(cluster=cluster, service=backend, desiredCount=0)
    wait_for("the backend's tasks to stop",
             lambda: not ecs.list_tasks(cluster=cluster, serviceName=backend)["taskArns"], timeout=60)
    status, text = fetch(server, frontend, "http://backend/")
    assert status == 200 and text.startswith("fetched 503: ") and "no RUNNING, healthy task" in text, text

    for name, c in ((backend, cluster), (orders, cluster), (frontend, "default"), (outsider, "default")):
        delete(ecs, name, cluster=c)
    assert ecs.list_services_by_namespace(namespace=ns)["serviceArns"] == []


def test_tasks_know_the_names_their_namespace_had_when_they_started(server, ecs):
    ns = uniq("late")
    frontend = deploy(ecs, [web()], serviceConnectConfiguration={"enabled": True, "namespace": ns})
    late = deploy(
        ecs,
        [web(portMappings=api_port(), environment=[{"name": "GREETING", "value": "late"}])],
        serviceConnectConfiguration={"enabled": True, "namespace": ns,
                                     "services": [{"portName": "api", "clientAliases": [{"port": 80, "dnsName": "late"}]}]},
    )
    status, text = fetch(server, frontend, "http://late/")
    assert status == 502 and "HttpRequestDenied" in text, text
    # A new deployment of the caller takes the name up.
    ecs.update_service(service=frontend, forceNewDeployment=True)
    wait_for("the frontend's new task to call the late service",
             lambda: fetch(server, frontend, "http://late/") == (200, "fetched 200: hello from skiff (late)\n"),
             timeout=60)
    # Changing the configuration starts a deployment that carries it.
    ecs.update_service(service=late, serviceConnectConfiguration={
        "enabled": True, "namespace": ns,
        "services": [{"portName": "api", "clientAliases": [{"port": 8081, "dnsName": "late"}]}]})
    (svc,) = ecs.describe_services(services=[late])["services"]
    primary = [d for d in svc["deployments"] if d["status"] == "PRIMARY"][0]
    assert primary["serviceConnectConfiguration"]["services"][0]["clientAliases"] == [{"port": 8081, "dnsName": "late"}]
    for name in (frontend, late):
        delete(ecs, name)


def test_a_service_calling_itself_without_end_is_stopped_by_its_concurrency(server, ecs):
    """A call chain through Service Connect holds one request slot of the
    called service per level: a loop (here a service calling its own name,
    deeper than its tasks take at once) ends with the router's 503 at the
    first level past skiff.concurrency, unwinds, and leaves the service
    serving with every slot free again."""
    ns = uniq("loop")
    name = deploy(
        ecs,
        [web(portMappings=api_port(), dockerLabels={"skiff.concurrency": "3"})],
        count=2,
        serviceConnectConfiguration={"enabled": True, "namespace": ns,
                                     "services": [{"portName": "api", "clientAliases": [{"port": 80, "dnsName": "me"}]}]},
    )
    tasks = sorted(ecs.list_tasks(serviceName=name)["taskArns"])
    # 200 levels asked for; 2 tasks x 3 requests each are admitted (the
    # first from the ingress, 5 more by name), the 7th call is refused,
    # and each level above it says what it fetched.
    url = "http://me/fetch?url=" * 199 + "http://me/"
    for _ in range(2):  # the same again: the first chain freed its slots
        status, text = fetch(server, name, url)
        assert status == 200, text
        assert text.startswith("fetched 200: " * 5 + "fetched 503: "), text[:400]
        assert "all 2 tasks of service" in text and "concurrency limit" in text, text[:400]
    assert get(server, name)[0] == 200
    # No task was stopped or replaced.
    assert sorted(ecs.list_tasks(serviceName=name)["taskArns"]) == tasks
    delete(ecs, name)


def test_bad_configurations_are_refused_naming_the_field(ecs):
    family = uniq("sc")
    ecs.register_task_definition(family=family, containerDefinitions=[web(portMappings=api_port())])
    taken = uniq("taken")
    ns = uniq("ns")
    ecs.create_service(serviceName=taken, taskDefinition=family, desiredCount=0, serviceConnectConfiguration={
        "enabled": True, "namespace": ns, "services": [{"portName": "api", "clientAliases": [{"port": 80, "dnsName": "db"}]}]})

    def refused(config):
        with pytest.raises(ClientError) as e:
            ecs.create_service(serviceName=uniq("bad"), taskDefinition=family, desiredCount=0,
                               serviceConnectConfiguration=config)
        assert e.value.response["Error"]["Code"] == "InvalidParameterException", e.value.response
        return e.value.response["Error"]["Message"]

    msg = refused({"enabled": True, "namespace": ns, "services": [{"portName": "db"}]})
    assert "serviceConnectConfiguration.services[0].portName" in msg and "api" in msg, msg
    msg = refused({"enabled": True, "services": [{"portName": "api"}]})
    assert "serviceConnectConfiguration.namespace" in msg and "serviceConnectDefaults" in msg, msg
    msg = refused({"enabled": True, "namespace": ns,
                   "services": [{"portName": "api", "discoveryName": "x", "clientAliases": [{"port": 80, "dnsName": "db"}]}]})
    assert "db:80" in msg and taken in msg, msg
    msg = refused({"enabled": True, "namespace": ns, "services": [{"portName": "api", "clientAliases": [{"port": 0}]}]})
    assert "clientAliases[0].port" in msg, msg
    with pytest.raises(ClientError) as e:
        ecs.register_task_definition(family=uniq("sc"), containerDefinitions=[
            web(portMappings=[{"name": "Web", "containerPort": 80}])])
    assert "portMappings[0].name" in e.value.response["Error"]["Message"]
    # Nothing refused was stored.
    arns = ecs.list_services_by_namespace(namespace=ns)["serviceArns"]
    assert [a.rsplit("/", 1)[1] for a in arns] == [taken]
    delete(ecs, taken)


def test_cloud_map_namespaces_are_named_by_their_arns(server, ecs):
    """Terraform's Service Connect examples make the namespace with Cloud
    Map (aws_service_discovery_http_namespace) and give ECS its ARN."""
    import json
    import os
    import subprocess

    from conftest import ROOT

    sd = server.client("servicediscovery")
    name = uniq("cm")
    op = sd.create_http_namespace(Name=name, CreatorRequestId="req-1", Description="the shop",
                                  Tags=[{"Key": "team", "Value": "edge"}])["OperationId"]
    o = sd.get_operation(OperationId=op)["Operation"]
    assert (o["Status"], o["Type"]) == ("SUCCESS", "CREATE_NAMESPACE")
    ns_id = o["Targets"]["NAMESPACE"]
    # The same request again is the same namespace; another is refused.
    again = sd.create_http_namespace(Name=name, CreatorRequestId="req-1")["OperationId"]
    assert sd.get_operation(OperationId=again)["Operation"]["Targets"]["NAMESPACE"] == ns_id
    with pytest.raises(sd.exceptions.NamespaceAlreadyExists):
        sd.create_http_namespace(Name=name, CreatorRequestId="req-2")
    ns = sd.get_namespace(Id=ns_id)["Namespace"]
    assert (ns["Name"], ns["Type"], ns["Description"]) == (name, "HTTP", "the shop")
    assert ns["Properties"]["HttpProperties"]["HttpName"] == name and ns["ServiceCount"] == 0
    arn = ns["Arn"]
    assert arn.endswith(f":namespace/{ns_id}") and arn.startswith("arn:aws:servicediscovery:")
    assert sd.list_tags_for_resource(ResourceARN=arn)["Tags"] == [{"Key": "team", "Value": "edge"}]
    sd.tag_resource(ResourceARN=arn, Tags=[{"Key": "env", "Value": "test"}])
    sd.untag_resource(ResourceARN=arn, TagKeys=["team"])
    assert sd.list_tags_for_resource(ResourceARN=arn)["Tags"] == [{"Key": "env", "Value": "test"}]
    found = sd.list_namespaces(Filters=[{"Name": "NAME", "Values": [name], "Condition": "EQ"}])["Namespaces"]
    assert [n["Id"] for n in found] == [ns_id]
    assert sd.list_namespaces(Filters=[{"Name": "TYPE", "Values": ["DNS_PRIVATE"], "Condition": "EQ"}])["Namespaces"] == []
    # aws-cli, unchanged.
    out = subprocess.run(
        [os.path.join(ROOT, ".venv", "bin", "aws"), "servicediscovery", "get-namespace", "--id", ns_id,
         "--endpoint-url", server.endpoint, "--region", "us-east-1", "--output", "json"],
        env={**os.environ, "AWS_ACCESS_KEY_ID": "AKIDSKIFFTEST", "AWS_SECRET_ACCESS_KEY": "x"},
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and json.loads(out.stdout)["Namespace"]["Name"] == name, out.stderr

    # ECS takes the ARN (here as a cluster's default) or the name: one
    # namespace. Default names use the namespace's name.
    cluster = uniq("cm")
    ecs.create_cluster(clusterName=cluster, serviceConnectDefaults={"namespace": arn})
    backend = deploy(
        ecs, [web(portMappings=api_port(), environment=[{"name": "GREETING", "value": "backend"}])],
        cluster=cluster, serviceConnectConfiguration={"enabled": True, "services": [{"portName": "api"}]})
    caller = deploy(ecs, [web()], serviceConnectConfiguration={"enabled": True, "namespace": name})
    assert fetch(server, caller, f"http://api.{name}:8080/") == (200, "fetched 200: hello from skiff (backend)\n")
    assert sd.get_namespace(Id=ns_id)["Namespace"]["ServiceCount"] == 1
    arns = ecs.list_services_by_namespace(namespace=arn)["serviceArns"]
    assert sorted(a.rsplit("/", 1)[1] for a in arns) == sorted([backend, caller])
    with pytest.raises(sd.exceptions.ResourceInUse):
        sd.delete_namespace(Id=ns_id)
    gone = "arn:aws:servicediscovery:us-east-1:123456789012:namespace/ns-0000000000000000"
    with pytest.raises(ClientError) as e:
        ecs.create_service(serviceName=uniq("bad"), taskDefinition=ecs.describe_services(
            cluster=cluster, services=[backend])["services"][0]["taskDefinition"], desiredCount=0,
            serviceConnectConfiguration={"enabled": True, "namespace": gone})
    assert "CreateHttpNamespace" in e.value.response["Error"]["Message"], e.value.response

    delete(ecs, backend, cluster=cluster)
    delete(ecs, caller)
    op = sd.delete_namespace(Id=ns_id)["OperationId"]
    assert sd.get_operation(OperationId=op)["Operation"]["Type"] == "DELETE_NAMESPACE"
    with pytest.raises(sd.exceptions.NamespaceNotFound):
        sd.get_namespace(Id=ns_id)
    with pytest.raises(sd.exceptions.OperationNotFound):
        sd.get_operation(OperationId="no-such-operation")
