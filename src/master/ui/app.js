// triad dashboard: every figure comes from this master's HTTP API (/v1/...) with the token the
// user typed, kept in this tab's sessionStorage only. Views poll while shown; a new leader shows
// within the cluster poll (500 ms) of the failover.
"use strict";

const TOKEN_KEY = "triad-token";
const CLUSTER_POLL_MS = 500;
const LIST_POLL_MS = 1000;
const OUTPUT_POLL_MS = 500;
const CHART_SECONDS = 120;

const $ = (id) => document.getElementById(id);
const token = () => sessionStorage.getItem(TOKEN_KEY);

// One line for the page: the API's {"error", "code"} body, or what went wrong on the way.
class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(path, opts = {}) {
  const headers = Object.assign({ "Authorization": "Bearer " + (token() || "") }, opts.headers || {});
  let r;
  try {
    r = await fetch(path, Object.assign({}, opts, { headers, cache: "no-store" }));
  } catch (e) {
    throw new ApiError(0, "UNAVAILABLE", "this master does not answer: " + e.message);
  }
  if (r.status === 401) {
    logout("the token was refused: " + await errorText(r));
    throw new ApiError(401, "UNAUTHENTICATED", "token refused");
  }
  if (!r.ok) throw new ApiError(r.status, "", await errorText(r));
  return r;
}

async function errorText(r) {
  try { const b = await r.json(); return `${b.error} (${b.code})`; } catch (_) { return `HTTP ${r.status}`; }
}

const json = async (path, opts) => (await api(path, opts)).json();

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

const time = (ms) => (ms ? new Date(Number(ms)).toLocaleTimeString() : "");
const showError = (msg) => { $("error").textContent = msg || ""; };

// ---- token prompt ---------------------------------------------------------------------------

function logout(why) {
  sessionStorage.removeItem(TOKEN_KEY);
  stopPolling();
  $("main").hidden = true;
  $("nav").hidden = true;
  $("logout").hidden = true;
  $("leader-banner").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = why || "";
}

async function login(t) {
  sessionStorage.setItem(TOKEN_KEY, t.trim());
  try {
    await json("/v1/cluster");
  } catch (e) {
    if (e.status !== 401) logout("cannot open the dashboard: " + e.message);
    return;
  }
  $("login").hidden = true;
  $("main").hidden = false;
  $("nav").hidden = false;
  $("logout").hidden = false;
  $("leader-banner").hidden = false;
  route();
}

// ---- polling --------------------------------------------------------------------------------

let timers = [];
function poll(fn, ms) {
  let stopped = false;
  const tick = async () => {
    if (stopped) return;
    try { await fn(); showError(""); } catch (e) { if (e.status !== 401) showError(e.message); }
    if (!stopped) timers.push(setTimeout(tick, ms));
  };
  const handle = { stop: () => { stopped = true; } };
  timers.push(handle);
  tick();
}
function stopPolling() {
  for (const t of timers) { if (typeof t === "object") t.stop(); else clearTimeout(t); }
  timers = [];
}

// ---- views ----------------------------------------------------------------------------------

function show(view) {
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== "view-" + view;
  for (const a of document.querySelectorAll("header nav a")) {
    a.classList.toggle("active", a.id === "nav-" + (view === "job" ? "jobs" : view));
  }
}

function route() {
  if (!token()) return logout();
  stopPolling();
  poll(refreshLeader, CLUSTER_POLL_MS);
  feedPoll();
  const [, view, id] = (location.hash || "#/cluster").split("/");
  switch (view) {
    case "executors": show("executors"); poll(refreshExecutors, LIST_POLL_MS); break;
    case "jobs":
      if (id) { show("job"); openJob(decodeURIComponent(id)); }
      else { show("jobs"); poll(refreshJobs, LIST_POLL_MS); }
      break;
    case "events": show("events"); poll(refreshChart, 1000); break;
    default: show("cluster");
  }
}

// Cluster: polled on every view, so the banner always names the current leader.
async function refreshLeader() {
  const c = await json("/v1/cluster");
  const leader = c.masters.find((m) => m.id === c.leader_id);
  $("leader").textContent = leader ? `master ${leader.id} at ${leader.addr} (term ${leader.term})` : "none";
  $("leader").dataset.id = leader ? String(leader.id) : "";
  const body = $("masters").tBodies[0];
  body.replaceChildren(...c.masters.map((m) => el("tr",
    { class: (m.id === c.leader_id ? "leader" : "") + (m.reachable ? "" : " unreachable"), "data-id": m.id },
    el("td", {}, `master ${m.id}`), el("td", {}, m.addr), el("td", {}, m.role), el("td", {}, m.term),
    el("td", {}, m.last_log_index), el("td", {}, m.applied_index),
    el("td", {}, m.reachable ? "yes" : "no: " + m.error))));
}

async function refreshExecutors() {
  const r = await json("/v1/executors");
  const body = $("executors").tBodies[0];
  body.replaceChildren(...r.executors.map((e) => {
    const cap = e.capacity || {}, used = e.used || {};
    const labels = Object.entries(e.labels || {}).map(([k, v]) => `${k}=${v}`).sort().join(", ");
    const drain = el("button", {
      onclick: async () => {
        try { await api(`/v1/executors/${encodeURIComponent(e.id)}/drain`, { method: "POST" }); refreshExecutors(); }
        catch (err) { showError(err.message); }
      },
    }, "Drain");
    if (e.state !== "alive") drain.disabled = true;
    return el("tr", { "data-id": e.id }, el("td", {}, e.id), el("td", {}, e.addr),
      el("td", { class: "state" }, e.state), el("td", {}, `${used.slots || 0}/${cap.slots || 0}`),
      el("td", {}, e.running), el("td", {}, e.epoch), el("td", {}, labels), el("td", {}, drain));
  }));
}

// Jobs: a filterable, paged list. Page tokens are remembered to go back.
const jobsPaging = { tokens: [""], page: 0 };
async function refreshJobs() {
  const q = new URLSearchParams({ page_size: $("job-page-size").value });
  if ($("job-filter").value) q.set("state", $("job-filter").value);
  if (jobsPaging.tokens[jobsPaging.page]) q.set("page_token", jobsPaging.tokens[jobsPaging.page]);
  const r = await json("/v1/jobs?" + q);
  jobsPaging.next = r.next_page_token;
  $("jobs-next").disabled = !r.next_page_token;
  $("jobs-prev").disabled = jobsPaging.page === 0;
  $("jobs-page").textContent = `page ${jobsPaging.page + 1}`;
  const body = $("jobs").tBodies[0];
  body.replaceChildren(...r.jobs.map((j) => {
    const c = j.counts || {}, n = (j.spec && j.spec.task_count) || 0;
    const cmd = j.spec ? [j.spec.command, ...(j.spec.args || [])].join(" ") : "";
    return el("tr", { class: "clickable", "data-id": j.id, onclick: () => { location.hash = "#/jobs/" + j.id; } },
      el("td", {}, el("code", {}, j.id)), el("td", {}, j.name), el("td", { class: "state " + j.state }, j.state),
      el("td", {}, `${c.succeeded || 0}/${n}`), el("td", {}, cmd), el("td", {}, time(j.created_at_ms)));
  }));
}
function resetPaging() { jobsPaging.tokens = [""]; jobsPaging.page = 0; refreshJobs().catch((e) => showError(e.message)); }

// A job: tasks, attempts, live state; each task's output follows live.
function openJob(id) {
  $("job-id").textContent = id;
  $("tasks").replaceChildren();
  const outputs = new Map(); // task index -> { attempt, offset, eof, pre, busy }
  $("job-cancel").onclick = async () => {
    try { await api(`/v1/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST" }); } catch (e) { showError(e.message); }
  };
  poll(async () => {
    const { job } = await json(`/v1/jobs/${encodeURIComponent(id)}`);
    $("job-state").textContent = job.state;
    $("job-state").className = "state " + job.state;
    $("job-cancel").disabled = ["succeeded", "failed", "cancelled"].includes(job.state);
    const s = job.spec || {};
    const facts = [["name", job.name], ["command", [s.command, ...(s.args || [])].join(" ")],
      ["created", time(job.created_at_ms)], ["finished", time(job.finished_at_ms)], ["idempotency key", job.idempotency_key]];
    $("job-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v || "")]));
    for (const t of job.tasks) renderTask(id, t, outputs);
  }, LIST_POLL_MS);
  poll(async () => { for (const [index, o] of outputs) await followOutput(id, index, o); }, OUTPUT_POLL_MS);
}

function renderTask(jobId, t, outputs) {
  let box = document.getElementById("task-" + t.index);
  if (!box) {
    box = el("div", { class: "task", id: "task-" + t.index },
      el("h3", {}, `task ${t.index} `, el("span", { class: "state", id: `task-${t.index}-state` })),
      el("table", { class: "attempts" }, el("thead", {}, el("tr", {}, ...["attempt", "executor", "token", "state",
        "exit code", "assigned", "started", "finished", "error"].map((h) => el("th", {}, h)))), el("tbody")),
      el("h4", {}, "output"), el("pre", { class: "output", id: `output-${t.index}` }));
    $("tasks").append(box);
  }
  const st = $(`task-${t.index}-state`);
  st.textContent = t.state;
  st.className = "state " + t.state;
  box.querySelector("tbody").replaceChildren(...t.attempts.map((a) => el("tr", {},
    el("td", {}, a.number), el("td", {}, a.executor), el("td", {}, a.token), el("td", { class: "state " + a.state }, a.state),
    el("td", {}, a.has_exit_code ? a.exit_code : ""), el("td", {}, time(a.assigned_at_ms)),
    el("td", {}, time(a.started_at_ms)), el("td", {}, time(a.finished_at_ms)), el("td", {}, a.error))));
  // Follow the latest attempt that started; a new attempt starts its output afresh.
  const started = t.attempts.filter((a) => a.started_at_ms).pop();
  if (!started) return;
  const o = outputs.get(t.index);
  if (!o || o.attempt !== started.number) {
    $(`output-${t.index}`).textContent = "";
    outputs.set(t.index, { attempt: started.number, offset: 0, eof: false, pre: $(`output-${t.index}`) });
  }
}

async function followOutput(jobId, index, o) {
  if (o.eof) return;
  const q = new URLSearchParams({ attempt: o.attempt, offset: o.offset });
  let r;
  try {
    r = await api(`/v1/jobs/${encodeURIComponent(jobId)}/tasks/${index}/logs?` + q);
  } catch (e) {
    if (e.status === 404) return; // no output yet
    throw e;
  }
  const text = await r.text();
  o.offset = Number(r.headers.get("x-triad-next-offset") || o.offset);
  o.eof = r.headers.get("x-triad-eof") === "true";
  if (text) o.pre.textContent += text;
}

// ---- events: chart from /metrics, feed of job changes -----------------------------------------

const series = []; // { t, total, done }
async function sampleMetrics() {
  const r = await fetch("/metrics", { cache: "no-store" });
  const page = await r.text();
  let total = 0, done = 0;
  for (const line of page.split("\n")) {
    const m = line.match(/^triad_jobs\{state="(\w+)"\} (\d+)/);
    if (!m) continue;
    total += Number(m[2]);
    if (["succeeded", "failed", "cancelled"].includes(m[1])) done += Number(m[2]);
  }
  series.push({ t: Date.now() / 1000, total, done });
  while (series.length > CHART_SECONDS + 1) series.shift();
}

async function refreshChart() {
  await sampleMetrics();
  const c = $("chart"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const rates = [];
  for (let i = 1; i < series.length; i++) {
    const dt = Math.max(series[i].t - series[i - 1].t, 0.001);
    rates.push({ sub: (series[i].total - series[i - 1].total) / dt, done: (series[i].done - series[i - 1].done) / dt });
  }
  const max = Math.max(1, ...rates.map((r) => Math.max(r.sub, r.done)));
  const x = (i) => (i / CHART_SECONDS) * (c.width - 40) + 35;
  const y = (v) => c.height - 15 - (v / max) * (c.height - 30);
  g.fillStyle = "#5b6475";
  g.fillText(max.toFixed(max < 10 ? 1 : 0) + "/s", 2, 12);
  g.fillText("0", 2, c.height - 15);
  for (const [key, colour] of [["sub", "#1f5fbf"], ["done", "#1a7f37"]]) {
    g.strokeStyle = colour;
    g.beginPath();
    rates.forEach((r, i) => (i ? g.lineTo(x(i), y(r[key])) : g.moveTo(x(i), y(r[key]))));
    g.stroke();
  }
}

// The feed: job state changes between polls of the most recent jobs (the event stream, once this
// master serves it, replaces this).
const seen = new Map();
let primed = false;
function feedPoll() {
  poll(async () => {
    const r = await json("/v1/jobs?page_size=1000&stale=true");
    for (const j of r.jobs) {
      const before = seen.get(j.id);
      if (before === j.state) continue;
      if (primed) addFeed(`${time(Date.now())}  job ${j.id} ${before ? before + " → " : "submitted, "}${j.state}`);
      seen.set(j.id, j.state);
    }
    primed = true;
  }, 2000);
}
function addFeed(text) {
  const f = $("feed");
  f.prepend(el("li", {}, text));
  while (f.children.length > 500) f.lastChild.remove();
}

// ---- start ----------------------------------------------------------------------------------

window.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (e) => { e.preventDefault(); login($("token").value); });
  $("logout").addEventListener("click", () => logout());
  $("job-filter").addEventListener("change", resetPaging);
  $("job-page-size").addEventListener("change", resetPaging);
  $("jobs-next").addEventListener("click", () => {
    if (!jobsPaging.next) return;
    jobsPaging.tokens[jobsPaging.page + 1] = jobsPaging.next;
    jobsPaging.page++;
    refreshJobs().catch((e) => showError(e.message));
  });
  $("jobs-prev").addEventListener("click", () => {
    if (jobsPaging.page > 0) jobsPaging.page--;
    refreshJobs().catch((e) => showError(e.message));
  });
  window.addEventListener("hashchange", route);
  if (token()) login(token()); else logout();
});
