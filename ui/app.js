// The skiff dashboard: one page, no build step. Every number on it comes
// from the ECS API (signed with the key the user signs in with, when the
// server checks keys) and from /metrics; every action is an API call, so
// the key's policy decides what this page may do, as it would for aws-cli.

import { sign } from "./sigv4.js";

const ECS = "AmazonEC2ContainerServiceV20141113.";
const REFRESH_MS = 2000;
const LOG_REFRESH_MS = 1000;
const HISTORY = 150; // metric samples kept per service (5 minutes at 2 s)
const MAX_LOG_LINES = 2000;

// ---------------------------------------------------------------- the API

class ApiError extends Error {
  constructor(type, message, status) {
    super(message);
    this.type = type;
    this.status = status;
  }
  toString() {
    return `${this.type}: ${this.message}`;
  }
}

const session = {
  get creds() {
    const raw = sessionStorage.getItem("skiff.creds");
    return raw ? JSON.parse(raw) : null;
  },
  set creds(c) {
    if (c) sessionStorage.setItem("skiff.creds", JSON.stringify(c));
    else sessionStorage.removeItem("skiff.creds");
  },
};

async function request(method, path, { query = "", target, body, service = "ecs", withHeaders = false } = {}) {
  const headers = {};
  let payload = "";
  if (target) {
    headers["content-type"] = "application/x-amz-json-1.1";
    headers["x-amz-target"] = target;
    payload = JSON.stringify(body || {});
  }
  const creds = session.creds;
  if (creds) {
    Object.assign(
      headers,
      sign({
        method,
        host: location.host,
        path,
        query,
        headers,
        body: payload,
        service,
        region: creds.region,
        accessKeyId: creds.accessKeyId,
        secretAccessKey: creds.secretAccessKey,
      }),
    );
  }
  let resp;
  try {
    resp = await fetch(path + (query ? "?" + query : ""), {
      method,
      headers,
      body: method === "POST" ? payload : undefined,
      cache: "no-store",
      credentials: "omit",
    });
  } catch (e) {
    throw new ApiError("NetworkError", `the server did not answer (${e.message})`, 0);
  }
  const text = await resp.text();
  if (!resp.ok) {
    let type = resp.headers.get("x-amzn-errortype") || `HTTP ${resp.status}`;
    let message = text.trim();
    try {
      const j = JSON.parse(text);
      type = String(j.__type || type).split("#").pop();
      message = j.message || j.Message || message;
    } catch {
      // A text answer: its words are the message.
    }
    throw new ApiError(type, message, resp.status);
  }
  return withHeaders ? { text, headers: resp.headers } : text;
}

const ecs = async (action, body) => JSON.parse(await request("POST", "/", { target: ECS + action, body }));

/** Every page of a List call, following nextToken. */
async function listAll(action, body, field) {
  const out = [];
  let token;
  do {
    const page = await ecs(action, { ...body, ...(token ? { nextToken: token } : {}) });
    out.push(...(page[field] || []));
    token = page.nextToken;
  } while (token);
  return out;
}

/** `list` in pieces of at most `n`, for Describe calls that take that many. */
function chunked(list, n) {
  const out = [];
  for (let i = 0; i < list.length; i += n) out.push(list.slice(i, i + n));
  return out;
}

/** DescribeTasks for any number of tasks, 100 per call, calls in parallel. */
async function describeTasks(cluster, arns) {
  const pages = await Promise.all(chunked(arns, 100).map((tasks) => ecs("DescribeTasks", { cluster, tasks })));
  return pages.flatMap((p) => p.tasks || []);
}

// ---------------------------------------------------------------- the DOM

/** An element: h("td", {class: "mono"}, "text", childNode, ...). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

const svgNS = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const c of children) el.append(c instanceof Node ? c : String(c));
  return el;
}

const $ = (id) => document.getElementById(id);
const last = (arn) => String(arn || "").split("/").pop();
const link = (href, text, attrs = {}) => h("a", { href, ...attrs }, text);
const enc = encodeURIComponent;

function badge(text) {
  const t = String(text || "");
  const kind = /^(RUNNING|ACTIVE|HEALTHY|COMPLETED|PRIMARY)$/.test(t)
    ? "ok"
    : /^(PENDING|PROVISIONING|ACTIVATING|IN_PROGRESS|DRAINING|DEACTIVATING|STOPPING|DEPROVISIONING)$/.test(t)
      ? "warn"
      : /^(STOPPED|UNHEALTHY|FAILED|INACTIVE)$/.test(t)
        ? "bad"
        : "";
  return h("span", { class: `badge ${kind}` }, t || "–");
}

function duration(secs) {
  if (!(secs >= 0)) return "–";
  secs = Math.floor(secs);
  const d = Math.floor(secs / 86400);
  const hh = Math.floor((secs % 86400) / 3600);
  const m = Math.floor((secs % 3600) / 60);
  const ss = secs % 60;
  if (d) return `${d}d ${hh}h`;
  if (hh) return `${hh}h ${m}m`;
  if (m) return `${m}m ${ss}s`;
  return `${ss}s`;
}

const epoch = (t) => (typeof t === "number" ? t : t ? Date.parse(t) / 1000 : undefined);
const time = (t) => (epoch(t) ? new Date(epoch(t) * 1000).toLocaleString() : "–");

function uptime(task) {
  const start = epoch(task.startedAt);
  if (!start) return "–";
  const end = epoch(task.stoppedAt) || Date.now() / 1000;
  return duration(end - start);
}

/** A task's stop, in words: the reason skiff gave and what its code means. */
function stopWords(task) {
  if (!task.stopCode && !task.stoppedReason) return "";
  const codes = {
    EssentialContainerExited: "an essential container stopped",
    TaskFailedToStart: "the task could not start",
    UserInitiated: "stopped by a user",
    ServiceSchedulerInitiated: "stopped by its service (replaced or scaled in)",
    SpotInterruption: "its capacity was reclaimed",
    TerminationNotice: "its node is going away",
  };
  const why = codes[task.stopCode] || task.stopCode || "";
  // A container's reason says more only when the task stopped because of it.
  const own = task.stopCode === "EssentialContainerExited" || task.stopCode === "TaskFailedToStart";
  const containers = (task.containers || [])
    .filter((c) => own && c.reason)
    .map((c) => c.reason)
    .join("; ");
  return [task.stoppedReason, why && `(${why})`, containers && `— ${containers}`].filter(Boolean).join(" ");
}

/**
 * Updates `tbody` to show `items` in order, one row per key, changing
 * only cells whose content changed (so that a button being clicked is not
 * replaced under the pointer). `cells(item)` gives each cell as a string,
 * a Node, or [signature, () => Node].
 */
function syncRows(tbody, items, key, cells) {
  const rows = tbody._rows || (tbody._rows = new Map());
  const seen = new Set();
  let at = tbody.firstChild;
  for (const item of items) {
    const k = key(item);
    seen.add(k);
    let row = rows.get(k);
    if (!row) {
      row = { tr: h("tr", { "data-key": k }), sigs: [] };
      rows.set(k, row);
    }
    cells(item).forEach((c, i) => {
      const [sig, make] = Array.isArray(c) ? c : c instanceof Node ? [c.outerHTML, () => c] : [String(c), () => String(c)];
      let td = row.tr.children[i];
      if (!td) td = row.tr.appendChild(h("td"));
      if (row.sigs[i] !== sig) {
        row.sigs[i] = sig;
        td.replaceChildren(make());
      }
    });
    if (row.tr !== at) tbody.insertBefore(row.tr, at);
    else at = at.nextSibling;
  }
  for (const [k, row] of rows) {
    if (!seen.has(k)) {
      row.tr.remove();
      rows.delete(k);
    }
  }
}

function table(headers, attrs = {}) {
  const tbody = h("tbody");
  const t = h("table", attrs, h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))), tbody);
  return { el: h("div", { class: "scroll" }, t), tbody };
}

/** A node's id, shortened; the whole id is its tooltip. */
function node(arn, worker) {
  const id = last(arn);
  if (!id) return "–";
  const short = id.length > 12 ? id.slice(0, 12) + "…" : id;
  return h("span", { class: "mono", title: id }, short, worker ? ` · worker ${worker.value}` : "");
}

// ---------------------------------------------------------------- messages

function showError(e) {
  $("error-text").textContent = e instanceof ApiError ? e.toString() : String(e && e.message ? e.message : e);
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error-text").textContent = "";
}

/** Asks before acting: resolves to true on Confirm. `extra` goes in the dialog. */
function confirmAction(text, extra) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  $("confirm-extra").replaceChildren(...(extra ? [extra] : []));
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    const input = extra && extra.querySelector ? extra.querySelector("input") : null;
    if (input) input.focus();
  });
}

/** Runs an action the user confirmed; its refusal is shown in the API's words. */
async function act(text, call, extra) {
  if (!(await confirmAction(text, extra))) return false;
  clearError();
  try {
    await call();
    refreshSoon();
    return true;
  } catch (e) {
    showError(e);
    return false;
  }
}

// ---------------------------------------------------------------- metrics

/**
 * Per service (key "cluster/service"): the traffic between two polls,
 * summed over the nodes: { t, dt, requests, errors, buckets: Map(le ->
 * count) }, oldest first.
 */
const intervals = new Map();
/** Per node (its id, or "" for the node the dashboard talks to): the
 * counters it showed at the last poll, by service, and when. */
const lastRead = new Map();
let metricsError = null;

const LABELS = /(\w+)="((?:[^"\\]|\\.)*)"/g;

/** One node's HTTP counters by service, from its /metrics text. */
function parseMetrics(text) {
  const per = new Map();
  const get = (k) => {
    if (!per.has(k)) per.set(k, { requests: 0, errors: 0, buckets: new Map() });
    return per.get(k);
  };
  for (const line of text.split("\n")) {
    if (!line.startsWith("skiff_http_request")) continue;
    const m = line.match(/^(\w+)\{(.*)\} (\S+)$/);
    if (!m) continue;
    const labels = {};
    for (const [, k, v] of m[2].matchAll(LABELS)) labels[k] = v.replace(/\\(.)/g, "$1");
    const key = `${labels.cluster}/${labels.service}`;
    const value = Number(m[3]);
    if (m[1] === "skiff_http_requests_total") {
      const x = get(key);
      x.requests += value;
      if (Number(labels.code) >= 500) x.errors += value;
    } else if (m[1] === "skiff_http_request_duration_seconds_bucket") {
      const b = get(key).buckets;
      b.set(labels.le, (b.get(labels.le) || 0) + value);
    }
  }
  return per;
}

/**
 * Reads every connected node's /metrics (through the node the dashboard
 * talks to) and adds what each counted since the last poll to its
 * services' intervals. A node that restarted (its counters went down) or
 * could not be read adds nothing this time.
 */
/** The connected nodes, as last listed, and when (they change seldom). */
let metricsNodes = { at: 0, ids: [""] };
const NODES_REFRESH_MS = 10000;

async function connectedNodes() {
  if (Date.now() - metricsNodes.at < NODES_REFRESH_MS) return metricsNodes.ids;
  let ids = [""];
  try {
    const arns = await listAll("ListContainerInstances", {}, "containerInstanceArns");
    const described = [];
    for (const part of chunked(arns, 100)) {
      described.push(...((await ecs("DescribeContainerInstances", { containerInstances: part })).containerInstances || []));
    }
    const connected = described.filter((n) => n.agentConnected).map((n) => n.ec2InstanceId);
    if (connected.length) ids = connected;
  } catch (e) {
    // Without the instances (a policy may not allow listing them), the
    // traffic of the node the dashboard talks to.
  }
  metricsNodes = { at: Date.now(), ids };
  return ids;
}

async function pollMetrics() {
  const nodes = await connectedNodes();
  const t = Date.now() / 1000;
  const reads = await Promise.allSettled(
    nodes.map((n) => request("GET", "/metrics", { query: n ? `node=${encodeURIComponent(n)}` : "" })),
  );
  const failed = reads.filter((r) => r.status === "rejected");
  metricsError = failed.length === reads.length ? failed[0].reason : null;
  const sums = new Map();
  reads.forEach((r, i) => {
    if (r.status !== "fulfilled") return;
    const now = parseMetrics(r.value);
    const before = lastRead.get(nodes[i]);
    lastRead.set(nodes[i], { t, per: now });
    if (!before) return;
    for (const [key, b] of now) {
      const a = before.per.get(key) || { requests: 0, errors: 0, buckets: new Map() };
      if (b.requests < a.requests) continue;
      if (!sums.has(key)) sums.set(key, { t, dt: t - before.t, requests: 0, errors: 0, buckets: new Map() });
      const x = sums.get(key);
      x.requests += b.requests - a.requests;
      x.errors += Math.max(0, b.errors - a.errors);
      for (const [le, n] of b.buckets) x.buckets.set(le, (x.buckets.get(le) || 0) + Math.max(0, n - (a.buckets.get(le) || 0)));
    }
  });
  const keys = new Set([...intervals.keys(), ...sums.keys()]);
  for (const key of keys) {
    const list = intervals.get(key) || [];
    const x = sums.get(key);
    if (x) list.push(x);
    else if (list.length) list.push({ t, dt: t - list[list.length - 1].t, requests: 0, errors: 0, buckets: new Map() });
    if (list.length > HISTORY) list.shift();
    intervals.set(key, list);
  }
}

/** The q-quantile of the requests in an interval, from its buckets. */
function quantile(x, q) {
  const bounds = [...x.buckets.keys()].sort((a, b) => (a === "+Inf" ? 1 : b === "+Inf" ? -1 : a - b));
  const counts = bounds.map((le) => x.buckets.get(le) || 0);
  const total = counts[counts.length - 1];
  if (!(total > 0)) return null;
  const rank = q * total;
  let prevBound = 0;
  let prevCount = 0;
  for (let i = 0; i < bounds.length; i++) {
    if (counts[i] >= rank) {
      if (bounds[i] === "+Inf") return prevBound;
      const bound = Number(bounds[i]);
      const inBucket = counts[i] - prevCount;
      return prevBound + (bound - prevBound) * (inBucket > 0 ? (rank - prevCount) / inBucket : 1);
    }
    prevBound = Number(bounds[i]);
    prevCount = counts[i];
  }
  return prevBound;
}

/** Series for one service: request rate, error rate, p50 and p99. */
function series(key) {
  const out = { rate: [], errors: [], p50: [], p99: [] };
  for (const x of intervals.get(key) || []) {
    if (x.dt <= 0) continue;
    out.rate.push([x.t, x.requests / x.dt]);
    out.errors.push([x.t, x.requests ? (100 * x.errors) / x.requests : 0]);
    const p50 = quantile(x, 0.5);
    const p99 = quantile(x, 0.99);
    if (p50 !== null) out.p50.push([x.t, p50 * 1000]);
    if (p99 !== null) out.p99.push([x.t, p99 * 1000]);
  }
  return out;
}

function chart(title, points, unit, id) {
  const w = 260;
  const ht = 60;
  const value = points.length ? points[points.length - 1][1] : null;
  const label = value === null ? "no requests" : `${value >= 100 ? value.toFixed(0) : value.toFixed(value >= 10 ? 1 : 2)} ${unit}`;
  const svg = s("svg", { viewBox: `0 0 ${w} ${ht}`, preserveAspectRatio: "none" });
  if (points.length > 1) {
    const t0 = points[0][0];
    const t1 = points[points.length - 1][0];
    const max = Math.max(...points.map((p) => p[1]), 1e-9);
    const xy = points
      .map(([t, v]) => `${(((t - t0) / Math.max(t1 - t0, 1e-9)) * w).toFixed(1)},${(ht - 2 - (v / max) * (ht - 6)).toFixed(1)}`)
      .join(" ");
    svg.append(s("polyline", { points: xy }));
  }
  return h("div", { class: "card chart", id }, h("div", { class: "t" }, h("span", {}, title), h("span", { class: "v" }, label)), svg);
}

// ---------------------------------------------------------------- views

/** The view on screen: { refresh(), stop() }. */
let view = null;
let timer = null;
let refreshing = false;
let again = false;

function crumbs(...parts) {
  $("crumbs").replaceChildren(
    ...parts.flatMap((p, i) => [i ? " / " : "", p.href ? link(p.href, p.text) : h("span", {}, p.text)]),
  );
}

function clustersView() {
  crumbs({ text: "clusters" });
  const t = table(["Cluster", "Status", "Services", "Running tasks", "Pending tasks", "Nodes"], { id: "clusters" });
  $("main").replaceChildren(h("h1", {}, "Clusters"), t.el);
  return {
    async refresh() {
      const arns = await listAll("ListClusters", {}, "clusterArns");
      const pages = await Promise.all(chunked(arns, 100).map((c) => ecs("DescribeClusters", { clusters: c })));
      const clusters = pages.flatMap((p) => p.clusters || []);
      syncRows(t.tbody, clusters, (c) => c.clusterArn, (c) => [
        [c.clusterName, () => link(`#/c/${enc(c.clusterName)}`, c.clusterName)],
        [c.status, () => badge(c.status)],
        c.activeServicesCount,
        c.runningTasksCount,
        c.pendingTasksCount,
        c.registeredContainerInstancesCount,
      ]);
    },
  };
}

function taskCells(cluster, withStop) {
  return (task) => {
    const id = last(task.taskArn);
    const worker = (task.attributes || []).find((a) => a.name === "skiff.worker");
    const cells = [
      [id, () => link(`#/c/${enc(cluster)}/t/${enc(id)}`, id, { class: "mono" })],
      (task.group || "").replace(/^service:/, "service "),
      last(task.taskDefinitionArn),
      [task.lastStatus, () => badge(task.lastStatus)],
      [task.healthStatus, () => badge(task.healthStatus)],
      [`${task.containerInstanceArn}/${worker && worker.value}`, () => node(task.containerInstanceArn, worker)],
      uptime(task),
      [stopWords(task), () => h("span", { class: "wrap" }, stopWords(task))],
    ];
    if (withStop) {
      const stoppable = task.desiredStatus !== "STOPPED";
      cells.push([
        `stop:${stoppable}`,
        () =>
          stoppable
            ? h("button", { class: "small danger", "data-action": "stop", onclick: () => stopTask(cluster, task.taskArn) }, "Stop")
            : "",
      ]);
    }
    return cells;
  };
}

const TASK_HEADERS = ["Task", "Group", "Task definition", "Status", "Health", "Node", "Uptime", "Stopped because"];

function stopTask(cluster, arn) {
  return act(`Stop task ${last(arn)}?`, () =>
    ecs("StopTask", { cluster, task: arn, reason: "Stopped from the dashboard" }),
  );
}

/** Filters rows by the words typed (every word must appear in the row). */
function filterInput(onchange) {
  return h("input", {
    class: "filter",
    id: "tasks-filter",
    type: "search",
    placeholder: "filter tasks (id, status, service…)",
    oninput: (e) => onchange(e.target.value),
  });
}

function matches(filter, task) {
  const words = filter.toLowerCase().split(/\s+/).filter(Boolean);
  if (!words.length) return true;
  const text = [task.taskArn, task.group, task.lastStatus, task.healthStatus, task.taskDefinitionArn, task.stoppedReason]
    .join(" ")
    .toLowerCase();
  return words.every((w) => text.includes(w));
}

function clusterView(cluster) {
  crumbs({ text: "clusters", href: "#/" }, { text: cluster });
  const services = table(["Service", "Status", "Desired", "Running", "Pending", "Task definition", "Deployments"], {
    id: "services",
  });
  const tasks = table([...TASK_HEADERS, ""], { id: "tasks" });
  const stopped = table(TASK_HEADERS, { id: "stopped-tasks" });
  const nodes = table(["Node", "Status", "Running tasks", "Pending tasks", "CPU left", "Memory left (MiB)"], {
    id: "nodes",
  });
  let filter = "";
  let lastTasks = [];
  const drawTasks = () =>
    syncRows(tasks.tbody, lastTasks.filter((t) => matches(filter, t)), (t) => t.taskArn, taskCells(cluster, true));
  const count = h("span", { class: "muted", id: "task-count" });
  $("main").replaceChildren(
    h("h1", {}, `Cluster ${cluster}`),
    h("h2", {}, "Services"),
    services.el,
    h("h2", {}, "Tasks ", count),
    filterInput((v) => {
      filter = v;
      drawTasks();
    }),
    tasks.el,
    h("h2", {}, "Recently stopped"),
    stopped.el,
    h("h2", {}, "Nodes"),
    nodes.el,
  );
  return {
    async refresh() {
      const [svcArns, running, gone, instances] = await Promise.all([
        listAll("ListServices", { cluster }, "serviceArns"),
        listAll("ListTasks", { cluster }, "taskArns"),
        listAll("ListTasks", { cluster, desiredStatus: "STOPPED" }, "taskArns"),
        listAll("ListContainerInstances", { cluster }, "containerInstanceArns"),
      ]);
      const [svcPages, runTasks, stopTasks, nodePage] = await Promise.all([
        Promise.all(chunked(svcArns, 10).map((c) => ecs("DescribeServices", { cluster, services: c }))),
        describeTasks(cluster, running),
        describeTasks(cluster, gone.slice(0, 100)),
        instances.length ? ecs("DescribeContainerInstances", { cluster, containerInstances: instances }) : { containerInstances: [] },
      ]);
      const svcs = svcPages.flatMap((p) => p.services || []).sort((a, b) => a.serviceName.localeCompare(b.serviceName));
      syncRows(services.tbody, svcs, (x) => x.serviceArn, (x) => [
        [x.serviceName, () => link(`#/c/${enc(cluster)}/s/${enc(x.serviceName)}`, x.serviceName)],
        [x.status, () => badge(x.status)],
        x.desiredCount,
        x.runningCount,
        x.pendingCount,
        last(x.taskDefinition),
        (x.deployments || []).map((d) => `${last(d.taskDefinition)} ${d.rolloutState || d.status}`).join(", "),
      ]);
      lastTasks = runTasks.sort((a, b) => (a.group || "").localeCompare(b.group || "") || a.taskArn.localeCompare(b.taskArn));
      count.textContent = `(${lastTasks.length})`;
      drawTasks();
      const recent = stopTasks.sort((a, b) => (epoch(b.stoppedAt) || 0) - (epoch(a.stoppedAt) || 0));
      syncRows(stopped.tbody, recent, (t) => t.taskArn, taskCells(cluster, false));
      syncRows(nodes.tbody, nodePage.containerInstances || [], (n) => n.containerInstanceArn, (n) => {
        const left = (name) => ((n.remainingResources || []).find((r) => r.name === name) || {}).integerValue;
        return [
          [n.ec2InstanceId || last(n.containerInstanceArn), () => h("span", { class: "mono" }, n.ec2InstanceId || last(n.containerInstanceArn))],
          [n.status, () => badge(n.status)],
          n.runningTasksCount,
          n.pendingTasksCount,
          left("CPU") ?? "–",
          left("MEMORY") ?? "–",
        ];
      });
    },
  };
}

/** The task definition a rollback goes to: the deployment before the primary, else the revision before. */
async function rollbackTarget(service) {
  const current = service.taskDefinition;
  const older = (service.deployments || []).find((d) => d.status !== "PRIMARY" && d.taskDefinition !== current);
  if (older) return older.taskDefinition;
  const family = last(current).split(":")[0];
  const revision = Number(last(current).split(":")[1]);
  const arns = await listAll("ListTaskDefinitions", { familyPrefix: family, sort: "DESC" }, "taskDefinitionArns");
  return arns.find((a) => last(a).split(":")[0] === family && Number(last(a).split(":")[1]) < revision) || null;
}

/** The deployments as bars from when each began, `width` pixels wide. */
/** How many of a service's deployments the timeline shows, newest. */
const TIMELINE_DEPLOYMENTS = 10;

/**
 * A service's latest deployments, finished ones too (ListServiceDeployments),
 * with the task definition each ran (DescribeServiceRevisions); null when
 * the key's policy does not allow reading them.
 */
async function deploymentHistory(cluster, name) {
  try {
    const list = (await ecs("ListServiceDeployments", { cluster, service: name, maxResults: TIMELINE_DEPLOYMENTS }))
      .serviceDeployments || [];
    const arns = list.map((d) => d.targetServiceRevisionArn).filter(Boolean);
    const revisions = arns.length ? (await ecs("DescribeServiceRevisions", { serviceRevisionArns: arns })).serviceRevisions || [] : [];
    const td = new Map(revisions.map((r) => [r.serviceRevisionArn, r.taskDefinition]));
    return list.map((d) => ({ ...d, taskDefinition: td.get(d.targetServiceRevisionArn) }));
  } catch (e) {
    return null;
  }
}

/**
 * Timeline rows, oldest first: each deployment from its start until it
 * was replaced or ended (now while it runs), labelled with its task
 * definition and status, and for the live ones their counts. Without the
 * history, the live deployments alone.
 */
function timelineRows(service, history) {
  const now = Date.now() / 1000;
  const number = (id) => String(id || "").split("/").pop();
  const live = new Map((service.deployments || []).map((d) => [number(d.id), d]));
  if (!history) {
    return [...(service.deployments || [])]
      .sort((a, b) => epoch(a.createdAt) - epoch(b.createdAt))
      .map((d) => {
        const done = d.rolloutState === "COMPLETED" || d.rolloutState === "FAILED";
        return {
          from: epoch(d.createdAt),
          to: done && d.status !== "PRIMARY" ? epoch(d.updatedAt) || now : now,
          label: `${last(d.taskDefinition)} ${d.status}`,
          bar: `${d.rolloutState || ""} ${d.runningCount}/${d.desiredCount} running`,
          color: d.rolloutState === "FAILED" ? "#cf222e" : d.status === "PRIMARY" ? "#1f6feb" : "#8b949e",
        };
      });
  }
  const list = [...history].sort((a, b) => epoch(a.startedAt || a.createdAt) - epoch(b.startedAt || b.createdAt));
  return list.map((d, i) => {
    const from = epoch(d.startedAt || d.createdAt);
    const next = list[i + 1] ? epoch(list[i + 1].startedAt || list[i + 1].createdAt) : now;
    const running = live.get(number(d.serviceDeploymentArn));
    const failed = /ROLLBACK|FAILED/.test(d.status);
    const to = running ? now : d.status === "SUCCESSFUL" ? next : epoch(d.finishedAt) || next;
    return {
      from,
      to,
      label: `${last(d.taskDefinition) || number(d.serviceDeploymentArn)} ${d.status}`,
      bar: running ? `${running.rolloutState || ""} ${running.runningCount}/${running.desiredCount} running` : d.status,
      color: failed ? "#cf222e" : running && running.status === "PRIMARY" ? "#1f6feb" : "#8b949e",
    };
  });
}

function timeline(rows, width) {
  const now = Date.now() / 1000;
  const start = Math.min(...rows.map((r) => r.from), now - 60);
  const w = Math.max(width, 480);
  const rowH = 22;
  const ht = rows.length * rowH + 22;
  const x = (t) => 150 + ((t - start) / Math.max(now - start, 1)) * (w - 160);
  const svg = s("svg", { viewBox: `0 0 ${w} ${ht}`, width: w, height: ht, id: "timeline" });
  rows.forEach((r, i) => {
    const y = i * rowH + 4;
    svg.append(
      s("text", { x: 0, y: y + 13 }, r.label),
      s("rect", { x: x(r.from), y, width: Math.max(x(r.to) - x(r.from), 2), height: rowH - 8, rx: 3, fill: r.color }),
      s("text", { x: Math.min(x(r.from) + 4, w - 200), y: y + 11, class: "on-bar" }, r.bar),
    );
  });
  svg.append(
    s("text", { x: 150, y: ht - 4 }, new Date(start * 1000).toLocaleTimeString()),
    s("text", { x: w - 60, y: ht - 4 }, "now"),
  );
  return svg;
}

function serviceView(cluster, name) {
  crumbs({ text: "clusters", href: "#/" }, { text: cluster, href: `#/c/${enc(cluster)}` }, { text: name });
  const stats = h("div", { class: "row", id: "counts" });
  const charts = h("div", { class: "charts", id: "charts" });
  const timelineBox = h("div", { class: "card timeline" });
  const events = table(["When", "Event"], { id: "events" });
  const tasks = table([...TASK_HEADERS, ""], { id: "tasks" });
  let service = null;
  const scale = () => {
    const input = h("input", { type: "number", min: 0, required: true, value: service.desiredCount, id: "scale-count" });
    return act(
      `Scale ${name} to how many tasks? (now ${service.desiredCount})`,
      () => ecs("UpdateService", { cluster, service: name, desiredCount: Number(input.value) }),
      h("label", {}, "Desired tasks ", input),
    );
  };
  const redeploy = () =>
    act(`Start a new deployment of ${name} (every task is replaced)?`, () =>
      ecs("UpdateService", { cluster, service: name, forceNewDeployment: true }),
    );
  const rollback = async () => {
    clearError();
    let target;
    try {
      target = await rollbackTarget(service);
    } catch (e) {
      return showError(e);
    }
    if (!target) return showError(`${name} has no earlier task definition to roll back to`);
    return act(`Roll ${name} back from ${last(service.taskDefinition)} to ${last(target)}?`, () =>
      ecs("UpdateService", { cluster, service: name, taskDefinition: target }),
    );
  };
  $("main").replaceChildren(
    h("h1", {}, `Service ${name}`),
    stats,
    h(
      "div",
      { class: "actions" },
      h("button", { id: "scale", onclick: scale }, "Scale…"),
      h("button", { id: "redeploy", onclick: redeploy }, "Force new deployment"),
      h("button", { id: "rollback", onclick: rollback }, "Roll back"),
    ),
    h("h2", {}, "Traffic"),
    charts,
    h("h2", {}, "Deployments"),
    timelineBox,
    h("h2", {}, "Tasks"),
    tasks.el,
    h("h2", {}, "Events"),
    events.el,
  );
  const stat = (id, n, l) => h("div", { class: "card stat", id }, h("div", { class: "n" }, n), h("div", { class: "l" }, l));
  return {
    async refresh() {
      const [described, arns, , history] = await Promise.all([
        ecs("DescribeServices", { cluster, services: [name] }),
        listAll("ListTasks", { cluster, serviceName: name }, "taskArns"),
        pollMetrics(),
        deploymentHistory(cluster, name),
      ]);
      if (!described.services || !described.services.length) {
        throw new ApiError("ServiceNotFoundException", `no service ${name} in cluster ${cluster}`, 400);
      }
      service = described.services[0];
      stats.replaceChildren(
        stat("desired", service.desiredCount, "desired"),
        stat("running", service.runningCount, "running"),
        stat("pending", service.pendingCount, "pending"),
        h("div", { class: "card stat" }, h("div", { class: "n" }, badge(service.status)), h("div", { class: "td" }, last(service.taskDefinition))),
      );
      const key = `${cluster}/${name}`;
      const sr = series(key);
      charts.replaceChildren(
        ...(metricsError
          ? [h("p", { class: "muted" }, `Traffic charts need /metrics: ${metricsError}`)]
          : [
              chart("Requests", sr.rate, "/s", "chart-rate"),
              chart("Errors (5xx)", sr.errors, "%", "chart-errors"),
              chart("Latency p50", sr.p50, "ms", "chart-p50"),
              chart("Latency p99", sr.p99, "ms", "chart-p99"),
            ]),
      );
      timelineBox.replaceChildren(timeline(timelineRows(service, history), timelineBox.clientWidth - 30));
      const list = await describeTasks(cluster, arns);
      list.sort((a, b) => a.taskArn.localeCompare(b.taskArn));
      syncRows(tasks.tbody, list, (t) => t.taskArn, taskCells(cluster, true));
      syncRows(events.tbody, (service.events || []).slice(0, 25), (e) => e.id, (e) => [time(e.createdAt), e.message]);
    },
  };
}

function taskView(cluster, id) {
  crumbs({ text: "clusters", href: "#/" }, { text: cluster, href: `#/c/${enc(cluster)}` }, { text: id });
  const facts = h("dl", { class: "facts", id: "task-facts" });
  const containers = table(["Container", "Status", "Exit code", "Health", "Reason"], { id: "containers" });
  const logs = h("pre", { class: "logs", id: "logs" });
  const stop = h("button", { id: "stop-task", class: "danger", onclick: () => stopTask(cluster, id) }, "Stop task");
  $("main").replaceChildren(
    h("h1", {}, `Task ${id}`),
    h("div", { class: "actions" }, stop),
    h("div", { class: "card" }, facts),
    h("h2", {}, "Containers"),
    containers.el,
    h("h2", {}, "Logs ", h("span", { class: "muted" }, "(following)")),
    logs,
  );
  let shown = 0;
  let logTimer = null;
  let logsError = null;
  // Where the last read ended: each read asks only for the lines since.
  let cursor = "";
  const followLogs = async () => {
    try {
      const { text, headers } = await request("GET", `/logs/${enc(cluster)}/${enc(id)}`, {
        query: cursor ? `from=${cursor}` : "",
        withHeaders: true,
      });
      cursor = headers.get("x-skiff-log-cursor") || "";
      logsError = null;
      if (!shown) logs.replaceChildren();
      const atBottom = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
      for (const line of text.split("\n").filter((l) => l)) {
        const [container, stream, ...rest] = line.split(" ");
        logs.append(h("div", { class: stream === "stderr" ? "stderr" : "" }, `${container} ${rest.join(" ")}`));
        shown++;
      }
      while (logs.childNodes.length > MAX_LOG_LINES) logs.firstChild.remove();
      if (atBottom) logs.scrollTop = logs.scrollHeight;
    } catch (e) {
      if (String(e) !== String(logsError)) {
        logsError = e;
        if (!shown) logs.textContent = `Logs cannot be read: ${e}`;
      }
    }
    if (view && view.id === `task:${cluster}/${id}`) logTimer = setTimeout(followLogs, LOG_REFRESH_MS);
  };
  return {
    id: `task:${cluster}/${id}`,
    start() {
      followLogs();
    },
    stop() {
      clearTimeout(logTimer);
    },
    async refresh() {
      const out = await ecs("DescribeTasks", { cluster, tasks: [id] });
      const task = (out.tasks || [])[0];
      if (!task) throw new ApiError("InvalidParameterException", `no task ${id} in cluster ${cluster}`, 400);
      const worker = (task.attributes || []).find((a) => a.name === "skiff.worker");
      const rows = [
        ["Status", badge(task.lastStatus)],
        ["Desired status", task.desiredStatus],
        ["Health", badge(task.healthStatus)],
        ["Task definition", last(task.taskDefinitionArn)],
        ["Group", task.group],
        ["Node", node(task.containerInstanceArn, worker)],
        ["Started", time(task.startedAt)],
        ["Uptime", uptime(task)],
        ["CPU / memory", `${Number(task.cpu) ? task.cpu + " CPU units" : "no CPU reservation"} / ${task.memory} MiB`],
      ];
      if (task.stopCode || task.stoppedReason) rows.push(["Stopped because", h("span", { id: "stop-reason" }, stopWords(task))]);
      facts.replaceChildren(...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
      stop.hidden = task.desiredStatus === "STOPPED";
      syncRows(containers.tbody, task.containers || [], (c) => c.name, (c) => [
        c.name,
        [c.lastStatus, () => badge(c.lastStatus)],
        c.exitCode ?? "–",
        [c.healthStatus, () => badge(c.healthStatus)],
        [c.reason || "", () => h("span", { class: "wrap" }, c.reason || "")],
      ]);
    },
  };
}

function signInView(message) {
  crumbs({ text: "sign in" });
  const region = localStorage.getItem("skiff.region") || "us-east-1";
  const form = h(
    "form",
    { class: "signin card", id: "signin" },
    h("p", {}, "This server checks keys: sign in with an access key. Every call this page makes is signed with it and allowed or refused by its policy."),
    message ? h("p", { class: "muted" }, message) : null,
    h("label", {}, "Access key ID", h("input", { name: "accessKeyId", id: "access-key-id", required: true, autocomplete: "username" })),
    h(
      "label",
      {},
      "Secret access key",
      h("input", { name: "secretAccessKey", id: "secret-access-key", type: "password", required: true, autocomplete: "current-password" }),
    ),
    h("label", {}, "Region", h("input", { name: "region", id: "region", value: region, required: true })),
    h("button", { type: "submit", class: "primary", id: "signin-submit" }, "Sign in"),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = Object.fromEntries(new FormData(form));
    session.creds = data;
    localStorage.setItem("skiff.region", data.region);
    clearError();
    try {
      await ecs("ListClusters", { maxResults: 1 });
      route();
    } catch (err) {
      session.creds = null;
      showError(err);
    }
  });
  $("main").replaceChildren(h("h1", {}, "Sign in"), form);
  return { refresh: async () => {} };
}

// ---------------------------------------------------------------- routing

function parseRoute() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "c" && parts[1]) {
    if (parts[2] === "s" && parts[3]) return () => serviceView(parts[1], parts[3]);
    if (parts[2] === "t" && parts[3]) return () => taskView(parts[1], parts[3]);
    return () => clusterView(parts[1]);
  }
  return () => clustersView();
}

async function refresh() {
  if (!view) return;
  if (refreshing) {
    again = true;
    return;
  }
  refreshing = true;
  const current = view;
  try {
    await current.refresh();
    if ($("error").dataset.fromRefresh) {
      clearError();
      delete $("error").dataset.fromRefresh;
    }
  } catch (e) {
    if (e instanceof ApiError && e.type === "MissingAuthenticationTokenException") {
      refreshing = false;
      return show(signInView());
    }
    if (current === view) {
      showError(e);
      $("error").dataset.fromRefresh = "1";
    }
  } finally {
    refreshing = false;
    if (again) {
      again = false;
      refreshSoon();
    }
  }
}

function refreshSoon() {
  setTimeout(refresh, 50);
}

function show(v) {
  if (view && view.stop) view.stop();
  view = v;
  if (view.start) view.start();
  refresh();
}

function route() {
  clearError();
  const creds = session.creds;
  $("who").textContent = creds ? `signed in as ${creds.accessKeyId}` : "";
  $("signout").hidden = !creds;
  show(parseRoute()());
}

function tick() {
  clearTimeout(timer);
  timer = setTimeout(async () => {
    if (!document.hidden) await refresh();
    tick();
  }, REFRESH_MS);
}

$("signout").addEventListener("click", () => {
  session.creds = null;
  route();
});
$("error-close").addEventListener("click", clearError);
window.addEventListener("hashchange", route);
route();
tick();
