"""Edge hosting: HTTPS at the ingress (SNI, HTTP/2 and HTTP/1.1 by ALPN,
certificates from a directory and reloaded, or issued by a real ACME CA,
Debian's pebble, started here), custom domains (`skiff.domains`, one
service per name), and the redirect to HTTPS."""

import datetime
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import urllib.request

import botocore.exceptions
import httpx
import pytest
import trustme
from cryptography import x509

from conftest import ROOT, Server, free_port, uniq, wait_for

DIST = os.path.join(ROOT, "guests", "dist")


def service(ecs, domains, image="hello-http.wasm", redirect=False, env=None):
    labels = {"skiff.domains": domains}
    if redirect:
        labels["skiff.https-redirect"] = "true"
    c = {
        "name": "web",
        "image": os.path.join(DIST, image),
        "memory": 32,
        "dockerLabels": labels,
        "environment": [{"name": "GREETING", "value": env or domains}],
    }
    td = ecs.register_task_definition(family=uniq("edge"), containerDefinitions=[c])["taskDefinition"]
    name = uniq("svc")
    ecs.create_service(serviceName=name, taskDefinition=td["taskDefinitionArn"], desiredCount=1)
    ecs.get_waiter("services_stable").wait(services=[name], WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    return name, td["taskDefinitionArn"]


def https(server, name, path="/", http2=False, verify=None, timeout=30):
    """GET https://NAME/PATH at the HTTPS ingress, with NAME as the TLS
    server name and Host. Returns (response, the server's certificate)."""
    ip, port = server.ingress_tls
    with httpx.Client(http2=http2, http1=not http2, verify=verify, timeout=timeout) as c:
        r = c.get(
            f"https://{ip}:{port}{path}",
            headers={"Host": name},
            extensions={"sni_hostname": name},
        )
        return r


def served_cert(server, name):
    """The leaf certificate the HTTPS ingress shows for server name `name`
    (None for no name), unverified."""
    ip, port = server.ingress_tls
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((ip, port), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname=name) as t:
            return x509.load_der_x509_certificate(t.getpeercert(binary_form=True))


def sans(cert):
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


def write_pair(ca, directory, stem, *names, **kw):
    leaf = ca.issue_cert(*names, **kw)
    leaf.private_key_pem.write_to_path(os.path.join(directory, f"{stem}.key"))
    leaf.cert_chain_pems[0].write_to_path(os.path.join(directory, f"{stem}.crt.tmp"))
    with open(os.path.join(directory, f"{stem}.crt.tmp"), "ab") as f:
        for pem in leaf.cert_chain_pems[1:]:
            f.write(pem.bytes())
    os.replace(os.path.join(directory, f"{stem}.crt.tmp"), os.path.join(directory, f"{stem}.crt"))
    return leaf


@pytest.fixture(scope="module")
def edge():
    """A server with an HTTPS ingress and certificates from a directory."""
    ca = trustme.CA()
    certs = tempfile.mkdtemp(prefix="skiff-certs-")
    write_pair(ca, certs, "one", "one.example.test")
    write_pair(ca, certs, "wild", "*.apps.example.test")
    write_pair(ca, certs, "default", "fallback.example.test")
    data = tempfile.mkdtemp(prefix="skiff-edge-")
    s = Server(data, "--ingress-tls", "127.0.0.1:0", "--tls-cert-dir", certs).start()
    ca_file = os.path.join(certs, "ca.pem")
    ca.cert_pem.write_to_path(ca_file)
    s.ca = ca
    s.ca_file = ca_file
    s.certs = certs
    yield s
    s.stop()
    shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(certs, ignore_errors=True)


def test_two_services_on_two_names_by_sni_over_h2_and_http1(edge):
    ecs = edge.client()
    one, _ = service(ecs, "one.example.test", env="one")
    two, _ = service(ecs, "two.apps.example.test", image="hello-http.wasm", env="two")
    ctx = ssl.create_default_context(cafile=edge.ca_file)
    for http2 in (True, False):
        r = https(edge, "one.example.test", http2=http2, verify=ctx)
        assert (r.status_code, r.text) == (200, "hello from skiff (one)\n")
        assert r.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
        r = https(edge, "two.apps.example.test", "/x", http2=http2, verify=ctx)
        assert (r.status_code, r.text) == (200, "you asked for /x\n")
    # Each name is shown its own certificate (the wildcard for the second).
    assert sans(served_cert(edge, "one.example.test")) == ["one.example.test"]
    assert sans(served_cert(edge, "two.apps.example.test")) == ["*.apps.example.test"]
    # A client that names no host gets default.crt; one naming a host no
    # certificate serves is refused in the handshake.
    assert sans(served_cert(edge, None)) == ["fallback.example.test"]
    with pytest.raises(ssl.SSLError):
        served_cert(edge, "nobody.example.org")
    # The custom domain routes over plain HTTP too, beside SERVICE.CLUSTER.DOMAIN.
    ip, port = edge.ingress
    for host in ("one.example.test", f"{one}.default.localhost"):
        with httpx.Client() as c:
            r = c.get(f"http://{ip}:{port}/", headers={"Host": host})
        assert (r.status_code, r.text) == (200, "hello from skiff (one)\n")
    for name in (one, two):
        ecs.delete_service(service=name, force=True)


def test_a_domain_belongs_to_one_service(edge):
    ecs = edge.client()
    owner, _ = service(ecs, "owned.example.test")
    c = {
        "name": "web",
        "image": os.path.join(DIST, "hello-http.wasm"),
        "memory": 32,
        "dockerLabels": {"skiff.domains": "OWNED.example.test, other.example.test"},
    }
    td = ecs.register_task_definition(family=uniq("edge"), containerDefinitions=[c])["taskDefinition"]
    second = uniq("svc")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ecs.create_service(serviceName=second, taskDefinition=td["taskDefinitionArn"], desiredCount=1)
    msg = e.value.response["Error"]["Message"]
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    assert f'domain "owned.example.test" (skiff.domains) is already claimed by service "{owner}" in cluster "default"' in msg
    # Nothing of the refused service was stored, and the free name it
    # listed was not taken either.
    assert ecs.describe_services(services=[second])["failures"][0]["reason"] == "MISSING"
    third, _ = service(ecs, "other.example.test")
    # An update to a definition claiming a held name is refused too, and
    # changes nothing.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ecs.update_service(service=third, taskDefinition=td["taskDefinitionArn"])
    assert f'already claimed by service "{owner}"' in e.value.response["Error"]["Message"]
    assert ecs.describe_services(services=[third])["services"][0]["taskDefinition"] != td["taskDefinitionArn"]
    # Deleting the owner frees the name.
    ecs.delete_service(service=owner, force=True)
    ecs.delete_service(service=third, force=True)
    ecs.create_service(serviceName=second, taskDefinition=td["taskDefinitionArn"], desiredCount=0)
    ecs.delete_service(service=second, force=True)


def test_bad_domains_are_refused_at_registration(edge):
    ecs = edge.client()
    for bad, why in [
        ("localhost", "at least two labels"),
        ("a.*.example.test", "wildcard other than a whole first label"),
        ("under_score.example.test", "character other than"),
        ("10.0.0.1", "IP address"),
    ]:
        c = {"name": "web", "image": os.path.join(DIST, "hello-http.wasm"), "memory": 32,
             "dockerLabels": {"skiff.domains": bad}}
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ecs.register_task_definition(family=uniq("bad"), containerDefinitions=[c])
        msg = e.value.response["Error"]["Message"]
        assert 'containerDefinitions[0].dockerLabels."skiff.domains"' in msg and why in msg, msg


def test_plain_http_redirects_to_https_when_asked(edge):
    ecs = edge.client()
    name, _ = service(ecs, "secure.apps.example.test", redirect=True, env="secure")
    ip, port = edge.ingress
    with httpx.Client() as c:
        r = c.get(f"http://{ip}:{port}/a/b?c=d", headers={"Host": "secure.apps.example.test"})
    assert r.status_code == 308
    assert r.headers["location"] == f"https://secure.apps.example.test:{edge.ingress_tls[1]}/a/b?c=d"
    # The service's default name is not redirected; HTTPS serves.
    with httpx.Client() as c:
        r = c.get(f"http://{ip}:{port}/", headers={"Host": f"{name}.localhost"})
    assert r.status_code == 200
    r = https(edge, "secure.apps.example.test", verify=ssl.create_default_context(cafile=edge.ca_file))
    assert (r.status_code, r.text) == (200, "hello from skiff (secure)\n")
    ecs.delete_service(service=name, force=True)


def test_certificates_are_read_again_when_their_files_change(edge):
    before = served_cert(edge, "one.example.test")
    leaf = write_pair(edge.ca, edge.certs, "one", "one.example.test", "extra.example.test")
    after = wait_for(
        "the new certificate to be served",
        lambda: (c := served_cert(edge, "one.example.test")).serial_number != before.serial_number and c,
        timeout=30,
    )
    assert sorted(sans(after)) == ["extra.example.test", "one.example.test"]
    assert sans(served_cert(edge, "extra.example.test")) == sans(after)
    del leaf


def test_tls_needs_certificates():
    data = tempfile.mkdtemp(prefix="skiff-edge-")
    p = subprocess.run(
        [os.environ.get("SKIFF_BIN", os.path.join(ROOT, "target", "release", "skiff")), "server",
         "--data-dir", data, "--api", "127.0.0.1:0", "--ingress", "127.0.0.1:0", "--ingress-tls", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60,
    )
    shutil.rmtree(data, ignore_errors=True)
    assert p.returncode != 0
    assert "--ingress-tls needs certificates: give --tls-cert-dir DIR, --acme-directory URL" in p.stderr


# ACME, against pebble.


class Pebble:
    """Debian's pebble (an ACME test CA) and pebble-challtestsrv (its DNS:
    every name resolves to 127.0.0.1), on free ports, validating HTTP-01
    on `http_port`."""

    def __init__(self, http_port):
        for tool in ("pebble", "pebble-challtestsrv"):
            if not shutil.which(tool):
                raise RuntimeError(f"{tool} is missing: apt-get install pebble")
        self.dir = tempfile.mkdtemp(prefix="skiff-pebble-")
        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1", "localhost")
        leaf.private_key_pem.write_to_path(os.path.join(self.dir, "key.pem"))
        leaf.cert_chain_pems[0].write_to_path(os.path.join(self.dir, "cert.pem"))
        self.root = os.path.join(self.dir, "ca.pem")
        ca.cert_pem.write_to_path(self.root)
        self.port, mgmt, dns, chall_mgmt = free_port(), free_port(), free_port(), free_port()
        self.management = f"https://127.0.0.1:{mgmt}"
        config = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{self.port}",
                "managementListenAddress": f"127.0.0.1:{mgmt}",
                "certificate": os.path.join(self.dir, "cert.pem"),
                "privateKey": os.path.join(self.dir, "key.pem"),
                "httpPort": http_port,
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        with open(os.path.join(self.dir, "config.json"), "w") as f:
            json.dump(config, f)
        self.dns = subprocess.Popen(
            ["pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
             "-dns01", f"127.0.0.1:{dns}", "-http01", "", "-https01", "", "-tlsalpn01", "",
             "-management", f"127.0.0.1:{chall_mgmt}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0", PEBBLE_AUTHZREUSE="0")
        self.log = open(os.path.join(self.dir, "pebble.log"), "w")
        self.proc = subprocess.Popen(
            ["pebble", "-config", os.path.join(self.dir, "config.json"), "-dnsserver", f"127.0.0.1:{dns}"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env,
        )
        self.directory = f"https://127.0.0.1:{self.port}/dir"
        ctx = ssl.create_default_context(cafile=self.root)

        def up():
            try:
                return urllib.request.urlopen(self.directory, context=ctx, timeout=2).status == 200
            except OSError:
                return False

        wait_for("pebble's directory", up, timeout=30)

    def issuer_roots(self):
        """The roots pebble signs issued certificates with (made at its start)."""
        ctx = ssl.create_default_context(cafile=self.root)
        pems = []
        for i in range(3):
            try:
                pems.append(urllib.request.urlopen(f"{self.management}/roots/{i}", context=ctx, timeout=5).read().decode())
            except OSError:
                break
        return "".join(pems)

    def stop(self):
        for p in (self.proc, self.dns):
            p.terminate()
            p.wait(timeout=30)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def metric(server, name, labels=""):
    text = urllib.request.urlopen(f"{server.endpoint}/metrics", timeout=10).read().decode()
    m = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}[^}}]*\}} (\d+)", text, re.M)
    return int(m.group(1)) if m else 0


def test_acme_issues_renews_and_never_reissues_needlessly():
    ingress_port = free_port()
    pebble = Pebble(ingress_port)
    data = tempfile.mkdtemp(prefix="skiff-acme-")
    args = ["--ingress-tls", "127.0.0.1:0", "--acme-directory", pebble.directory,
            "--acme-email", "ops@example.test", "--acme-ca-root", pebble.root]

    def start():
        return Server(data, *args).start(ingress=f"127.0.0.1:{ingress_port}")

    s = start()
    try:
        ecs = s.client()
        name, _ = service(ecs, "shop.example.test", env="shop")
        wait_for("a certificate from pebble", lambda: metric(s, "skiff_acme_orders_total", 'result="issued"') == 1, timeout=90)
        roots = ssl.create_default_context(cadata=pebble.issuer_roots())
        r = https(s, "shop.example.test", verify=roots)
        assert (r.status_code, r.text) == (200, "hello from skiff (shop)\n")
        issued = served_cert(s, "shop.example.test")
        assert sans(issued) == ["shop.example.test"]
        crt = os.path.join(data, "acme", "certs", "shop.example.test.crt")
        assert os.stat(crt.replace(".crt", ".key")).st_mode & 0o077 == 0

        # A restart serves the stored certificate and orders nothing.
        s.stop()
        s = start()
        checks = metric(s, "skiff_acme_checks_total")
        wait_for("two more ACME checks", lambda: metric(s, "skiff_acme_checks_total") >= checks + 2, timeout=30)
        assert metric(s, "skiff_acme_orders_total", 'result="issued"') == 0
        assert served_cert(s, "shop.example.test").serial_number == issued.serial_number

        # Renewal: a stored certificate with less than a third of its life
        # left is replaced by a new one from the CA, without a restart of
        # anything but skiff. (A node whose store has no certificate for a
        # name stores the copy in its DATA_DIR/acme/certs when it starts:
        # a new data directory, so a new store, with an old copy there.)
        s.stop()
        shutil.rmtree(data, ignore_errors=True)
        os.makedirs(os.path.join(data, "acme", "certs"))
        old = trustme.CA()
        now = datetime.datetime.now(datetime.timezone.utc)
        write_pair(old, os.path.join(data, "acme", "certs"), "shop.example.test", "shop.example.test",
                   not_before=now - datetime.timedelta(days=80), not_after=now + datetime.timedelta(days=10))
        s = start()
        name, _ = service(s.client(), "shop.example.test", env="shop")
        wait_for("the renewed certificate", lambda: metric(s, "skiff_acme_orders_total", 'result="issued"') == 1, timeout=90)
        renewed = served_cert(s, "shop.example.test")
        assert renewed.serial_number not in (issued.serial_number,)
        assert renewed.not_valid_after_utc > now + datetime.timedelta(days=30)
        r = https(s, "shop.example.test", verify=roots)
        assert r.status_code == 200
        ecs = s.client()
        ecs.delete_service(service=name, force=True)
    finally:
        s.stop()
        pebble.stop()
        shutil.rmtree(data, ignore_errors=True)


def test_acme_on_several_nodes_orders_once_and_any_node_answers_and_serves(etcd, tmp_path):
    """Three nodes on one etcd: z0 (no --acme-directory) is the one the
    CA's HTTP-01 requests reach; z1 and z2 order. One of them orders the
    name, z0 answers its challenge from the store, and every node serves
    the certificate."""
    ingress_port = free_port()
    pebble = Pebble(ingress_port)
    store = f"etcd://{etcd}/{uniq('acme')}"
    operator = tempfile.mkdtemp(prefix="skiff-certs-")
    acme = ["--acme-directory", pebble.directory, "--acme-ca-root", pebble.root]
    nodes = []
    try:
        for i, extra in enumerate([["--tls-cert-dir", operator], acme, acme]):
            args = ["--store", store, "--workers", "1", "--ingress-tls", "127.0.0.1:0",
                    "--attribute", f"ecs.availability-zone=z{i}", *extra]
            ingress = f"127.0.0.1:{ingress_port}" if i == 0 else "127.0.0.1:0"
            nodes.append(Server(str(tmp_path / f"n{i}"), *args).start(ingress=ingress))
        service(nodes[0].client(), "multi.example.test", env="multi")

        def issued():
            return [metric(n, "skiff_acme_orders_total", 'result="issued"') for n in nodes]

        wait_for("a certificate from pebble", lambda: sum(issued()) == 1, timeout=90)
        assert issued()[0] == 0, "z0 has no --acme-directory: it orders nothing"
        roots = ssl.create_default_context(cadata=pebble.issuer_roots())
        for n in nodes:
            wait_for("the certificate served", lambda: sans(served_cert(n, "multi.example.test")) == ["multi.example.test"])
            r = https(n, "multi.example.test", verify=roots)
            assert (r.status_code, r.text) == (200, "hello from skiff (multi)\n")
        # Nothing more is ordered: every node sees the stored certificate.
        checks = [metric(n, "skiff_acme_checks_total") for n in nodes[1:]]
        wait_for("two more ACME checks on each ordering node", lambda: all(
            metric(n, "skiff_acme_checks_total") >= c + 2 for n, c in zip(nodes[1:], checks)), timeout=30)
        assert sum(issued()) == 1
        assert sum(metric(n, "skiff_acme_orders_total", 'result="failed"') for n in nodes) == 0
    finally:
        for n in nodes:
            n.stop()
        pebble.stop()
        shutil.rmtree(operator, ignore_errors=True)
