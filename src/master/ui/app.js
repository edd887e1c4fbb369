// triad dashboard: every figure comes from this master's HTTP API (/v1/...) with the token the
// user typed, kept in this tab's sessionStorage only. Views poll while shown; the cluster is
// asked every 150 ms (up to two requests in flight, each cut off after 1.5 s, the newest answer
// wins), so a new leader shows about as soon as it is elected. The event stream (/v1/events,
// Server-Sent Events read with fetch(), since EventSource cannot send the token) feeds the live
// feed and the chart for as long as the tab is open, resuming from the last index it saw.
"use strict";

const TOKEN_KEY = "triad-token";
const CLUSTER_POLL_MS = 150;
const CLUSTER_TIMEOUT_MS = 1500;
const CLUSTER_IN_FLIGHT = 2;
const LIST_POLL_MS = 1000;
const OUTPUT_POLL_MS = 500;
const MAX_FOLLOWS = 2; // task outputs streamed at once (HTTP/1.1 allows a browser 6 connections)
const CHART_SECONDS = 120;
const FEED_MAX = 500;
const TERMINAL = ["succeeded", "failed", "cancelled"];

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
  stopEvents();
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
  startEvents();
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
  for (const c of follows) c.abort();
  follows.clear();
}
const follows = new Set(); // AbortControllers of the outputs being streamed

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
  pollCluster();
  const [, view, id] = (location.hash || "#/cluster").split("/");
  switch (view) {
    case "executors": show("executors"); poll(refreshExecutors, LIST_POLL_MS); break;
    case "jobs":
      if (id) { show("job"); openJob(decodeURIComponent(id)); }
      else { show("jobs"); poll(refreshJobs, LIST_POLL_MS); }
      break;
    case "events": show("events"); poll(async () => drawChart(), 1000); break;
    case "crons": show("crons"); poll(refreshCrons, 2000); break;
    default: show("cluster");
  }
}

// Cluster: asked on every view, so the banner always names the current leader. Several requests
// may be in flight (one may wait on a master that just died); only the newest answer is shown.
function pollCluster() {
  let stopped = false, issued = 0, shown = 0, inFlight = 0;
  const ask = async () => {
    if (stopped || inFlight >= CLUSTER_IN_FLIGHT) return;
    const seq = ++issued;
    inFlight++;
    const ctl = new AbortController();
    const cut = setTimeout(() => ctl.abort(), CLUSTER_TIMEOUT_MS);
    try {
      const c = await json("/v1/cluster", { signal: ctl.signal });
      if (!stopped && seq > shown) { shown = seq; renderCluster(c); showError(""); }
    } catch (e) {
      if (!stopped && seq > shown && e.status !== 401) { shown = seq; showError(e.message); }
    } finally {
      clearTimeout(cut);
      inFlight--;
    }
  };
  const timer = setInterval(ask, CLUSTER_POLL_MS);
  timers.push({ stop: () => { stopped = true; clearInterval(timer); } });
  ask();
}

function renderCluster(c) {
  const id = c.leader_id;
  const leader = c.masters.find((m) => m.id === id);
  $("leader").textContent = leader ? `master ${leader.id} at ${leader.addr} (term ${leader.term})` : "none";
  $("leader").dataset.id = leader ? String(leader.id) : "";
  const body = $("masters").tBodies[0];
  body.replaceChildren(...c.masters.map((m) => el("tr",
    { class: (m.id === id ? "leader" : "") + (m.reachable ? "" : " unreachable"), "data-id": m.id },
    el("td", {}, `master ${m.id}`), el("td", {}, m.addr), el("td", {}, m.role), el("td", {}, m.term),
    el("td", {}, m.last_log_index), el("td", {}, m.applied_index),
    el("td", {}, m.reachable ? "yes" : "no: " + m.error))));
}

const ago = (ms) => (ms < 1000 ? `${ms} ms ago` : `${(ms / 1000).toFixed(1)} s ago`);

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
    // The leader's last heartbeat from it (leader memory; 0 when not known).
    const beat = e.last_heartbeat_ms
      ? el("td", { class: "heartbeat", title: new Date(Number(e.last_heartbeat_ms)).toISOString() }, ago(Number(e.heartbeat_age_ms)))
      : el("td", { class: "heartbeat" }, "—");
    return el("tr", { "data-id": e.id }, el("td", {}, e.id), el("td", {}, e.addr),
      el("td", { class: "state" }, e.state), el("td", {}, `${used.slots || 0}/${cap.slots || 0}`),
      el("td", {}, e.running), el("td", {}, e.epoch), el("td", {}, labels), beat, el("td", {}, drain));
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
  // Up to MAX_FOLLOWS outputs are streamed (follow=true); the others are read every 500 ms
  // from where they left off, and streamed once a stream is free.
  poll(async () => {
    for (const [index, o] of outputs) {
      if (o.eof || o.streaming) continue;
      if (follows.size < MAX_FOLLOWS) streamOutput(id, index, o);
      else await readOutput(id, index, o);
    }
  }, OUTPUT_POLL_MS);
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
    outputs.set(t.index, { attempt: started.number, offset: 0, eof: false, streaming: false, pre: $(`output-${t.index}`) });
  }
}

const logsPath = (jobId, index, q) => `/v1/jobs/${encodeURIComponent(jobId)}/tasks/${index}/logs?` + new URLSearchParams(q);

// One read from the offset: what is there now, and whether the attempt has ended and all is read.
async function readOutput(jobId, index, o) {
  let r;
  try {
    r = await api(logsPath(jobId, index, { attempt: o.attempt, offset: o.offset }));
  } catch (e) {
    if (e.status === 404) return; // no output yet
    throw e;
  }
  const bytes = new Uint8Array(await r.arrayBuffer());
  o.offset = Number(r.headers.get("x-triad-next-offset") || o.offset + bytes.length);
  o.eof = r.headers.get("x-triad-eof") === "true";
  if (bytes.length) o.pre.textContent += new TextDecoder().decode(bytes);
}

// Streams the output as it is written (follow=true) until the attempt ends, then reads once
// more to learn that all is read.
async function streamOutput(jobId, index, o) {
  const ctl = new AbortController();
  follows.add(ctl);
  o.streaming = true;
  try {
    const r = await api(logsPath(jobId, index, { attempt: o.attempt, offset: o.offset, follow: true }), { signal: ctl.signal });
    const reader = r.body.getReader(), dec = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      o.offset += value.length;
      o.pre.textContent += dec.decode(value, { stream: true });
    }
    if (!ctl.signal.aborted) await readOutput(jobId, index, o);
  } catch (e) {
    if (e.status !== 404 && !ctl.signal.aborted) showError(e.message);
  } finally {
    follows.delete(ctl);
    o.streaming = false;
  }
}

// ---- events: the live feed and the chart, from the event stream --------------------------------

// Submissions and completions per second of arrival, from the stream's job events (a job event
// from nothing is a submission; one to succeeded, failed or cancelled a completion).
const rate = new Map(); // second -> { sub, done }
function count(ev) {
  if (ev.kind !== "job") return;
  const sec = Math.floor(Date.now() / 1000), b = rate.get(sec) || { sub: 0, done: 0 };
  if (!ev.from) b.sub++;
  if (TERMINAL.includes(ev.to)) b.done++;
  rate.set(sec, b);
  for (const k of rate.keys()) if (k < sec - CHART_SECONDS - 5) rate.delete(k);
}

function drawChart() {
  const c = $("chart"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const now = Math.floor(Date.now() / 1000);
  const rates = [];
  for (let s = now - CHART_SECONDS; s <= now; s++) rates.push(rate.get(s) || { sub: 0, done: 0 });
  const max = Math.max(1, ...rates.map((r) => Math.max(r.sub, r.done)));
  const x = (i) => (i / CHART_SECONDS) * (c.width - 40) + 35;
  const y = (v) => c.height - 15 - (v / max) * (c.height - 30);
  g.fillStyle = "#5b6475";
  g.fillText(max + "/s", 2, 12);
  g.fillText("0", 2, c.height - 15);
  for (const [key, colour] of [["sub", "#1f5fbf"], ["done", "#1a7f37"]]) {
    g.strokeStyle = colour;
    g.beginPath();
    rates.forEach((r, i) => (i ? g.lineTo(x(i), y(r[key])) : g.moveTo(x(i), y(r[key]))));
    g.stroke();
  }
  const total = rates.reduce((a, r) => ({ sub: a.sub + r.sub, done: a.done + r.done }), { sub: 0, done: 0 });
  $("chart-totals").textContent = `${total.sub} submitted, ${total.done} completed in the last ${CHART_SECONDS} s`;
}

function describe(ev) {
  const move = ev.from ? `${ev.from} → ${ev.to}` : `new, ${ev.to}`;
  switch (ev.kind) {
    case "job": return `job ${ev.job_id} ${move}`;
    case "task": return `task ${ev.job_id}/${ev.task_index} ${move}` +
      (ev.attempt ? ` (attempt ${ev.attempt}${ev.executor ? " on " + ev.executor : ""}, token ${ev.token})` : "") +
      (ev.has_exit_code ? ` exit ${ev.exit_code}` : "");
    case "executor": return `executor ${ev.executor} ${move} (epoch ${ev.epoch})`;
    case "cron": return `cron ${ev.cron} ${ev.cron_event}` + (ev.job_id ? ` job ${ev.job_id}` : "") + (ev.reason ? `: ${ev.reason}` : "");
    default: return JSON.stringify(ev);
  }
}

function addFeed(index, ev) {
  const f = $("feed");
  const attrs = { "data-index": index, "data-kind": ev.kind };
  if (ev.job_id) attrs["data-job"] = ev.job_id;
  f.prepend(el("li", attrs, `${time(Date.now())}  #${index}  ${describe(ev)}`));
  while (f.children.length > FEED_MAX) f.lastChild.remove();
}

// The stream: one fetch() read chunk by chunk, SSE blocks split on blank lines. It resumes from
// the last index seen (progress marks included) after a drop or a master's restart; if those
// events are gone on this master (410), from now on.
const stream = { ctl: null, last: null, stopped: true };
function stopEvents() {
  stream.stopped = true;
  if (stream.ctl) stream.ctl.abort();
}
async function startEvents() {
  if (!stream.stopped) return;
  stream.stopped = false;
  while (!stream.stopped) {
    stream.ctl = new AbortController();
    const q = stream.last === null ? "" : "?from=" + stream.last;
    try {
      const r = await api("/v1/events" + q, { signal: stream.ctl.signal });
      setFeedStatus(`live from ${location.host}` + (stream.last === null ? "" : `, resumed after #${stream.last}`));
      await readEvents(r.body.getReader());
      if (!/stream ended:/.test($("feed-source").textContent)) setFeedStatus("stream ended; reconnecting");
    } catch (e) {
      if (stream.stopped || e.status === 401) return;
      if (e.status === 410) { stream.last = null; setFeedStatus("events gone here: " + e.message + "; resuming from now"); }
      else setFeedStatus("stream failed: " + e.message + "; reconnecting");
    }
    if (!stream.stopped) await new Promise((res) => setTimeout(res, 500));
  }
}
function setFeedStatus(t) { $("feed-source").textContent = t; }

async function readEvents(reader) {
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += dec.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      onSse(block);
    }
  }
}

// One SSE block: `id:`, `event:` and `data:` lines (the format of the HTML standard's
// event-stream; comments start with a colon).
function onSse(block) {
  let id = null, kind = "message", data = "";
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const i = line.indexOf(":"), k = i < 0 ? line : line.slice(0, i);
    let v = i < 0 ? "" : line.slice(i + 1);
    if (v.startsWith(" ")) v = v.slice(1);
    if (k === "id") id = v; else if (k === "event") kind = v; else if (k === "data") data += (data ? "\n" : "") + v;
  }
  if (!data) return;
  const m = JSON.parse(data);
  if (kind === "error") { setFeedStatus(`stream ended: ${m.error} (${m.code}); reconnecting`); return; }
  if (id !== null) stream.last = id;
  for (const ev of m.events || []) { addFeed(m.index, ev); count(ev); }
}

// Crons: schedule, next times, counts, the last run.
async function refreshCrons() {
  const r = await json("/v1/crons");
  const body = $("crons").tBodies[0];
  body.replaceChildren(...(r.crons || []).map((c) => {
    const last = (c.runs || []).slice(-1)[0];
    return el("tr", { "data-name": c.name }, el("td", {}, c.name), el("td", {}, el("code", {}, c.schedule)),
      el("td", {}, c.tz || "UTC"), el("td", {}, c.suspended ? "suspended" : "active"),
      el("td", {}, (c.next_ms || []).slice(0, 2).map((t) => new Date(Number(t)).toLocaleString()).join(", ")),
      el("td", {}, `${c.fired}/${c.skipped}/${c.missed}`),
      el("td", {}, last ? `${last.outcome} ${time(last.fired_at_ms || last.scheduled_at_ms)} ${last.job_state || ""}` : ""));
  }));
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
