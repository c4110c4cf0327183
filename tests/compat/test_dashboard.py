"""The dashboard (`/ui/`) in a real headless Chromium driven through
WebDriver (Debian's chromium and chromium-driver; .ci/run installs them),
against a real `skiff server --auth`: the page signs every call with the
key it is signed in with, so the key's policy decides what it may do.

With SKIFF_SCREENSHOTS=DIR set, the tests also save the screenshots the
README shows (docs/dashboard-*.png)."""

import http.client
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request

import pytest

from conftest import REGION, ROOT, auth_server, uniq, wait_for

DIST = os.path.join(ROOT, "guests", "dist")
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

ADMIN = ("AKIASKIFFUIADMIN0001", "ui-admin-secret-0123456789abcdefghijk")
READER = ("AKIASKIFFUIREADER001", "ui-reader-secret-0123456789abcdefghij")

KEYS = {
    "keys": [
        {
            "access_key_id": ADMIN[0],
            "secret_access_key": ADMIN[1],
            "name": "admin",
            "policy": {"Statement": [{"Effect": "Allow", "Action": ["ecs:*", "logs:*", "skiff:*"], "Resource": "*"}]},
        },
        {
            "access_key_id": READER[0],
            "secret_access_key": READER[1],
            "name": "reader",
            "policy": {
                "Statement": [
                    {"Effect": "Allow", "Action": ["ecs:Describe*", "ecs:List*", "logs:GetLogEvents"], "Resource": "*"}
                ]
            },
        },
    ]
}


@pytest.fixture(scope="module")
def ui():
    """A server with keys, and an admin boto3 client for it."""
    import boto3

    for s in auth_server(KEYS, "skiff-ui-"):
        s.admin = boto3.client(
            "ecs",
            endpoint_url=s.endpoint,
            region_name=REGION,
            aws_access_key_id=ADMIN[0],
            aws_secret_access_key=ADMIN[1],
        )
        yield s


@pytest.fixture(scope="module")
def browser():
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        assert os.path.exists(path), f"{path} is needed for the dashboard tests (apt-get install {package}; .ci/run installs it)"
    # Selenium must not try to download a driver: this machine has its own.
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="skiff-ui-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        f"--user-data-dir={profile}",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver, name):
    out = os.environ.get("SKIFF_SCREENSHOTS")
    if out:
        os.makedirs(out, exist_ok=True)
        driver.save_screenshot(os.path.join(out, f"dashboard-{name}.png"))


def el(driver, css):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css)


def els(driver, css):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, css)


def text(driver, css):
    """The text of the element `css` picks, or "" while there is none."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    try:
        return el(driver, css).text
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def sign_in(driver, ui, key):
    driver.get(f"{ui.endpoint}/ui/")
    # A page left signed in by an earlier test signs out first.
    driver.execute_script("sessionStorage.clear()")
    driver.get(f"{ui.endpoint}/ui/#/")
    driver.refresh()
    wait_for("the sign-in form", lambda: els(driver, "#signin"), timeout=30)
    el(driver, "#access-key-id").send_keys(key[0])
    el(driver, "#secret-access-key").send_keys(key[1])
    region = el(driver, "#region")
    region.clear()
    region.send_keys(REGION)
    el(driver, "#signin-submit").click()
    wait_for("the clusters page", lambda: els(driver, "#clusters"), timeout=30)


def asked(driver):
    """Waits for the confirmation dialog; its question."""
    wait_for("the confirmation dialog", lambda: el(driver, "#confirm").get_attribute("open") is not None, timeout=10)
    return text(driver, "#confirm-text")


def confirm(driver):
    asked(driver)
    el(driver, "#confirm-ok").click()


def scale_to(driver, n):
    el(driver, "#scale").click()
    count = el(driver, "#scale-count")
    count.clear()
    count.send_keys(str(n))
    confirm(driver)


def open_service(ui, driver, key, count, cluster=None, name=None):
    """Signs in with `key` and opens a service of `count` tasks (a new one
    unless named), once its page shows them desired."""
    if name is None:
        cluster = uniq("uic")
        name = service(ui, count, cluster)
    sign_in(driver, ui, key)
    driver.get(f"{ui.endpoint}/ui/#/c/{cluster}/s/{name}")
    wait_for(f"{count} desired", lambda: text(driver, "#desired .n") == str(count), timeout=60)
    return cluster, name


def row_ids(driver, table):
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        return [r.get_attribute("data-key").rsplit("/", 1)[-1] for r in els(driver, f"#{table} tbody tr")]
    except StaleElementReferenceException:
        return None


def service(ui, count, cluster, memory=32):
    ui.admin.create_cluster(clusterName=cluster)
    family = uniq("ui")
    td = ui.admin.register_task_definition(
        family=family,
        containerDefinitions=[{"name": "web", "image": os.path.join(DIST, "hello-http.wasm"), "memory": memory}],
    )["taskDefinition"]["taskDefinitionArn"]
    name = uniq("web")
    ui.admin.create_service(cluster=cluster, serviceName=name, taskDefinition=td, desiredCount=count)
    return name


def traffic(ui, name, cluster, n):
    ip, port = ui.ingress
    conn = http.client.HTTPConnection(ip, port, timeout=30)
    for i in range(n):
        conn.request("GET", f"/{i}", headers={"Host": f"{name}.{cluster}.localhost"})
        conn.getresponse().read()
    conn.close()


def test_the_dashboard_is_served_without_a_key_and_browsers_are_sent_to_it(ui):
    with urllib.request.urlopen(f"{ui.endpoint}/ui/", timeout=10) as r:
        assert r.status == 200 and b'src="app.js"' in r.read()
        assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    req = urllib.request.Request(f"{ui.endpoint}/", headers={"Accept": "text/html"})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **kw):
            return None

    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.build_opener(NoRedirect).open(req, timeout=10)
    assert e.value.code == 302 and e.value.headers["Location"] == "/ui/"


def test_a_wrong_secret_is_refused_at_sign_in(ui, browser):
    driver = browser
    driver.get(f"{ui.endpoint}/ui/")
    driver.execute_script("sessionStorage.clear()")
    driver.refresh()
    wait_for("the sign-in form", lambda: els(driver, "#signin"), timeout=30)
    el(driver, "#access-key-id").send_keys(ADMIN[0])
    el(driver, "#secret-access-key").send_keys("not-the-secret")
    el(driver, "#signin-submit").click()
    wait_for("the refusal", lambda: "InvalidSignatureException" in text(driver, "#error-text"), timeout=30)
    assert els(driver, "#signin"), "the sign-in form stays"


def test_a_service_reaches_its_count_and_a_stopped_task_is_replaced(ui, browser):
    driver = browser
    cluster = uniq("uic")
    name = service(ui, 2, cluster)
    open_service(ui, driver, ADMIN, 2, cluster, name)
    wait_for("2 running tasks", lambda: text(driver, "#running .n") == "2", timeout=60)
    before = wait_for("two task rows", lambda: (lambda ids: ids if ids and len(ids) == 2 else None)(row_ids(driver, "tasks")))

    # Some traffic, so that the charts have something to draw.
    traffic(ui, name, cluster, 40)

    victim = before[0]
    el(driver, f'#tasks tr[data-key$="{victim}"] button[data-action="stop"]').click()
    confirm(driver)
    wait_for(
        "a replacement task in the list",
        lambda: (lambda ids: ids and victim not in ids and len(ids) == 2 and set(ids) != set(before))(row_ids(driver, "tasks")),
        timeout=60,
    )
    wait_for("2 running again", lambda: text(driver, "#running .n") == "2", timeout=60)
    (stopped,) = ui.admin.describe_tasks(cluster=cluster, tasks=[victim])["tasks"]
    assert stopped["desiredStatus"] == "STOPPED" and stopped["stoppedReason"] == "Stopped from the dashboard"
    traffic(ui, name, cluster, 40)
    wait_for("the request chart to show a rate", lambda: "/s" in text(driver, "#chart-rate .v"), timeout=30)
    if os.environ.get("SKIFF_SCREENSHOTS"):
        # Charts with a few minutes' shape in them: traffic until the
        # latency chart has a dozen points.
        def drawn():
            traffic(ui, name, cluster, 25)
            points = driver.execute_script(
                "const l = document.querySelector('#chart-p99 polyline');"
                "return l ? l.getAttribute('points').split(' ').length : 0"
            )
            return points >= 12

        wait_for("a dozen points in the charts", drawn, timeout=120)
    screenshot(driver, "service")

    driver.get(f"{ui.endpoint}/ui/#/c/{cluster}")
    wait_for("the cluster's tasks", lambda: len(row_ids(driver, "tasks") or []) == 2, timeout=30)
    wait_for("the stopped task among the recently stopped", lambda: victim in (row_ids(driver, "stopped-tasks") or []), timeout=30)
    assert "stopped by a user" in text(driver, f'#stopped-tasks tr[data-key$="{victim}"]')
    wait_for("this node's capacity", lambda: len(row_ids(driver, "nodes") or []) == 1, timeout=30)
    screenshot(driver, "cluster")


def test_a_trapped_tasks_reason_and_log_lines(ui, browser):
    driver = browser
    cluster = uniq("uic")
    ui.admin.create_cluster(clusterName=cluster)
    family = uniq("crash")
    ui.admin.register_task_definition(
        family=family,
        containerDefinitions=[
            {"name": "main", "image": os.path.join(DIST, "crash.wasm"), "memory": 32, "command": ["panic"]}
        ],
    )
    task = ui.admin.run_task(cluster=cluster, taskDefinition=family)["tasks"][0]["taskArn"]
    task_id = task.rsplit("/", 1)[-1]
    sign_in(driver, ui, ADMIN)
    driver.get(f"{ui.endpoint}/ui/#/c/{cluster}/t/{task_id}")
    wait_for("the stop reason", lambda: "trapped" in text(driver, "#stop-reason"), timeout=60)
    reason = text(driver, "#stop-reason")
    assert "Essential container in task exited" in reason and "an essential container stopped" in reason, reason
    wait_for("the guest's log lines", lambda: "crash guest asked to panic" in text(driver, "#logs"), timeout=30)
    assert "trapped" in text(driver, "#containers")
    screenshot(driver, "task")


def test_scaling_a_service_from_the_dashboard(ui, browser):
    driver = browser
    cluster, name = open_service(ui, driver, ADMIN, 1)
    scale_to(driver, 3)
    wait_for("3 desired", lambda: text(driver, "#desired .n") == "3", timeout=30)
    wait_for("3 running", lambda: text(driver, "#running .n") == "3", timeout=60)
    (svc,) = ui.admin.describe_services(cluster=cluster, services=[name])["services"]
    assert svc["desiredCount"] == 3


def test_rolling_back_to_the_revision_before(ui, browser):
    driver = browser
    cluster = uniq("uic")
    name = service(ui, 1, cluster)
    first = ui.admin.describe_services(cluster=cluster, services=[name])["services"][0]["taskDefinition"]
    family = first.rsplit("/", 1)[-1].split(":")[0]
    second = ui.admin.register_task_definition(
        family=family,
        containerDefinitions=[
            {"name": "web", "image": os.path.join(DIST, "hello-http.wasm"), "memory": 32,
             "environment": [{"name": "GREETING", "value": "two"}]}
        ],
    )["taskDefinition"]["taskDefinitionArn"]
    ui.admin.update_service(cluster=cluster, service=name, taskDefinition=second)
    ui.admin.get_waiter("services_stable").wait(
        cluster=cluster, services=[name], WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    open_service(ui, driver, ADMIN, 1, cluster, name)
    el(driver, "#rollback").click()
    words = asked(driver)
    assert f"from {family}:2 to {family}:1" in words, words
    el(driver, "#confirm-ok").click()
    wait_for(
        "the service back on revision 1",
        lambda: ui.admin.describe_services(cluster=cluster, services=[name])["services"][0]["taskDefinition"] == first,
        timeout=30,
    )

    # The timeline shows the finished deployments too: revision 1, then 2,
    # then 1 again, which runs.
    def rows():
        labels = driver.execute_script(
            "return [...document.querySelectorAll('#timeline text:not(.on-bar)')].map((t) => t.textContent)"
        )
        rows = [l for l in labels if l.startswith(family + ":")]
        return len(rows) == 3 and rows

    labels = wait_for("three deployments in the timeline", rows, timeout=30)
    assert [l.split(" ")[0] for l in labels] == [f"{family}:1", f"{family}:2", f"{family}:1"], labels


def test_cancelling_asks_and_does_nothing(ui, browser):
    driver = browser
    cluster, name = open_service(ui, driver, ADMIN, 1)
    el(driver, "#redeploy").click()
    assert "new deployment" in asked(driver)
    el(driver, "#confirm-cancel").click()
    (svc,) = ui.admin.describe_services(cluster=cluster, services=[name])["services"]
    assert len(svc["deployments"]) == 1


def test_an_action_the_keys_policy_denies_is_refused_in_its_words(ui, browser):
    driver = browser
    cluster, name = open_service(ui, driver, READER, 1)
    scale_to(driver, 5)
    wait_for("the refusal", lambda: "AccessDeniedException" in text(driver, "#error-text"), timeout=30)
    words = text(driver, "#error-text")
    assert "ecs:UpdateService" in words, words
    # The reader cannot read /metrics either: the charts say so.
    wait_for("the charts' refusal", lambda: "AccessDenied" in text(driver, "#charts"), timeout=30)
    (svc,) = ui.admin.describe_services(cluster=cluster, services=[name])["services"]
    assert svc["desiredCount"] == 1


def test_a_cluster_of_a_thousand_tasks_stays_usable(ui, browser):
    """1,000 running tasks: the cluster page lists them all (ListTasks and
    DescribeTasks page by 100) and a filter narrows them to one. The times
    are printed, not asserted (a busy machine makes them noise)."""
    driver = browser
    cluster = uniq("uik")
    name = service(ui, 1000, cluster, memory=6)
    wait_for(
        "1,000 running tasks",
        lambda: ui.admin.describe_services(cluster=cluster, services=[name])["services"][0]["runningCount"] == 1000,
        timeout=120,
    )
    sign_in(driver, ui, ADMIN)
    started = time.monotonic()
    driver.get(f"{ui.endpoint}/ui/#/c/{cluster}")
    wait_for("1,000 rows", lambda: text(driver, "#task-count") == "(1000)", timeout=60)
    rows = driver.execute_script("return document.querySelectorAll('#tasks tbody tr').length")
    shown = time.monotonic() - started
    assert rows == 1000
    one = ui.admin.list_tasks(cluster=cluster, maxResults=1)["taskArns"][0].rsplit("/", 1)[-1]
    started = time.monotonic()
    el(driver, "#tasks-filter").send_keys(one)
    wait_for(
        "the filter to leave one row",
        lambda: driver.execute_script("return document.querySelectorAll('#tasks tbody tr').length") == 1,
        timeout=30,
    )
    filtered = time.monotonic() - started
    print(f"\ndashboard: 1,000 tasks listed {shown * 1000:.0f} ms after opening the cluster; filtered to one in {filtered * 1000:.0f} ms")
    ui.admin.delete_service(cluster=cluster, service=name, force=True)
