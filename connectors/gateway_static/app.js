// Foresight live page: subscribes to the gateway's WebSocket feed and draws what arrives.
// No framework and no build step; every string from the feed goes through textContent.
"use strict";

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
// What the value chart shows around the entity's latest data: the recent past and the
// forecast ahead. The first view is the one the page opens on (?view= picks another).
const VIEWS = [
  { id: "5m", label: "5 min", past: 15 * MINUTE, ahead: 5 * MINUTE },
  { id: "1h", label: "1 h", past: HOUR, ahead: HOUR },
  { id: "24h", label: "24 h", past: 3 * HOUR, ahead: DAY },
];
const HISTORY_MS = Math.max(...VIEWS.map((v) => v.past)); // observed history kept per series
const HISTORY_POINTS = 1200; // and at most this many points per series
const FEED = 50; // alert events kept in the feed
const EPISODES = 2000; // alert episodes remembered to show each state change once
const SEVERITY_RANK = { INFO: 1, WARNING: 2, CRITICAL: 3 };
const STATUS_ORDER = { FIRING: 0, RESOLVED: 1 };

const params = new URLSearchParams(location.search);
const apiKey = params.get("api_key") || "";
const state = {
  entities: new Map(), // name -> {latest, metrics: Map(metric -> {observed, score, forecast})}
  firing: new Map(), // dedup_key -> alert
  episodes: new Map(), // alert_id -> furthest status shown in the feed
  feed: [],
  selected: params.get("entity"),
  metric: null,
  view: VIEWS.find((v) => v.id === params.get("view")) || VIEWS[0],
  lastId: null,
  received: 0,
  socket: null,
  retry: 0,
};

const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function formatNumber(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  const abs = Math.abs(value);
  if (abs !== 0 && (abs >= 1e6 || abs < 1e-3)) return value.toExponential(2);
  return String(Number(value.toFixed(2)));
}

const WINDOWS = new Set(["1m", "5m", "15m", "1h"]);

// A feature as a person reads it: "memory_percent:15m:slope" is "memory_percent slope over 15 m".
function describeFeature(feature) {
  const parts = feature.split(":");
  if (parts.length >= 3 && WINDOWS.has(parts[parts.length - 2])) {
    const window = parts[parts.length - 2];
    const metric = parts.slice(0, -2).join(":");
    return `${metric} ${parts[parts.length - 1]} over ${window.slice(0, -1)} ${window.slice(-1)}`;
  }
  return feature;
}

// What drove a prediction, largest first, each with its signed contribution.
function formatDrivers(drivers) {
  return (drivers || [])
    .map((d) => `${describeFeature(d.feature)} ${d.contribution >= 0 ? "+" : ""}${d.contribution.toFixed(2)}`)
    .join(", ");
}

function formatTime(ms) {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

function formatDuration(ms) {
  const s = Math.round(ms / 1000);
  if (s < 120) return `${s} s`;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  if (s < 2 * 86400) return `${formatNumber(s / 3600)} h`;
  return `${formatNumber(s / 86400)} d`;
}

function severityRank(severity) {
  return SEVERITY_RANK[severity] || 0;
}

// ---- state -------------------------------------------------------------------------------

function push(series, point) {
  if (series.length && series[series.length - 1].t === point.t) series[series.length - 1] = point;
  else series.push(point);
  while (series.length > HISTORY_POINTS || series[0].t < point.t - HISTORY_MS) series.shift();
}

function addBatch(batch) {
  let entry = state.entities.get(batch.entity);
  if (!entry) {
    entry = { latest: null, metrics: new Map() };
    state.entities.set(batch.entity, entry);
  }
  if (entry.latest && entry.latest.event_time > batch.event_time) return;
  entry.latest = batch;
  const forecasts = new Map(); // metric -> this batch's forecast points, one per horizon
  for (const p of batch.predictions) {
    let m = entry.metrics.get(p.metric);
    if (!m) {
      m = { observed: [], score: [], forecast: null };
      entry.metrics.set(p.metric, m);
    }
    if (p.kind === "ANOMALY") {
      push(m.observed, { t: batch.event_time, v: p.value });
      push(m.score, { t: batch.event_time, v: p.score });
    } else if (p.kind === "FORECAST" && p.value !== null) {
      if (!forecasts.has(p.metric)) forecasts.set(p.metric, []);
      forecasts.get(p.metric).push({
        t: batch.event_time + 1000 * (p.horizon_s || 0),
        v: p.value,
        lo: p.lower ?? p.value,
        hi: p.upper ?? p.value,
      });
    }
  }
  // Forecasts come on their own cadence: a metric keeps its latest set until a newer one.
  for (const [metric, points] of forecasts) {
    points.sort((a, b) => a.t - b.t);
    entry.metrics.get(metric).forecast = { t0: batch.event_time, points };
  }
  if (!state.selected) state.selected = batch.entity;
}

function setFiring(alert) {
  if (alert.status === "FIRING") {
    state.firing.set(alert.dedup_key, alert);
    return;
  }
  const current = state.firing.get(alert.dedup_key);
  if (current && current.starts_at <= alert.starts_at) state.firing.delete(alert.dedup_key);
}

// A state change from the feed (live or replayed). The gateway relays each once, but a page
// that reconnects to another gateway process can be replayed a change it has shown already.
function takeAlert(alert) {
  const seen = state.episodes.get(alert.alert_id);
  if (seen !== undefined && STATUS_ORDER[alert.status] <= STATUS_ORDER[seen]) return;
  state.episodes.delete(alert.alert_id);
  state.episodes.set(alert.alert_id, alert.status);
  if (state.episodes.size > EPISODES) state.episodes.delete(state.episodes.keys().next().value);
  setFiring(alert);
  state.feed.unshift(alert);
  if (state.feed.length > FEED) state.feed.pop();
}

// ---- the feed ----------------------------------------------------------------------------

function setStatus(text, kind) {
  const pill = $("status");
  pill.textContent = text;
  pill.className = `pill pill-${kind}`;
}

function showBanner(text) {
  const banner = $("banner");
  banner.textContent = text;
  banner.hidden = !text;
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const url = `${scheme}://${location.host}/ws?api_key=${encodeURIComponent(apiKey)}`;
  const socket = new WebSocket(url);
  state.socket = socket;
  setStatus("connecting…", "wait");
  socket.onopen = () => {
    const subscribe = { type: "subscribe", topics: ["predictions", "alerts"] };
    if (state.lastId !== null) subscribe.last_id = state.lastId;
    socket.send(JSON.stringify(subscribe));
  };
  socket.onmessage = (event) => onMessage(JSON.parse(event.data));
  socket.onclose = (event) => {
    if (event.code === 1006 && state.retry === 0 && state.received === 0) {
      showBanner("The gateway refused the connection: is ?api_key= in the address right?");
    }
    setStatus("reconnecting…", "bad");
    const delay = Math.min(10000, 500 * 2 ** state.retry++);
    setTimeout(connect, delay);
  };
}

function onMessage(message) {
  state.received++;
  switch (message.type) {
    case "subscribed":
      state.retry = 0;
      showBanner("");
      setStatus("live", "ok");
      if (!message.resumed) state.firing.clear(); // the snapshot that follows is all of it
      if (state.lastId === null || !message.resumed) state.lastId = message.id;
      break;
    case "snapshot":
      if (message.topic === "predictions") addBatch(message.data);
      else setFiring(message.data);
      break;
    case "prediction":
      state.lastId = message.id;
      addBatch(message.data);
      break;
    case "alert":
      state.lastId = message.id;
      takeAlert(message.data);
      break;
    case "dropped":
      setStatus(`live · ${message.total} skipped`, "wait");
      break;
    case "error":
      showBanner(`Gateway: ${message.message}`);
      break;
  }
  scheduleRender();
}

// ---- drawing -----------------------------------------------------------------------------

let renderPending = false;
function scheduleRender() {
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(() => {
    renderPending = false;
    render();
  });
}

function render() {
  renderEntities();
  renderDetail();
  renderAlerts();
}

function selectEntity(name) {
  state.selected = name;
  state.metric = null;
  render();
}

function firingByEntity() {
  const byEntity = new Map();
  for (const alert of state.firing.values()) {
    if (!byEntity.has(alert.entity)) byEntity.set(alert.entity, []);
    byEntity.get(alert.entity).push(alert);
  }
  for (const alerts of byEntity.values()) {
    alerts.sort((a, b) => severityRank(b.severity) - severityRank(a.severity));
  }
  return byEntity;
}

// Entities worst firing severity first (critical, warning, info, none), then by name.
function renderEntities() {
  const byEntity = firingByEntity();
  const rows = [...new Set([...state.entities.keys(), ...byEntity.keys()])].map((name) => {
    const alerts = byEntity.get(name) || [];
    return { name, alerts, severity: alerts.length ? alerts[0].severity : null };
  });
  rows.sort(
    (a, b) =>
      severityRank(b.severity) - severityRank(a.severity) || (a.name < b.name ? -1 : 1),
  );
  const alerting = rows.filter((r) => r.severity).length;
  const critical = rows.filter((r) => r.severity === "CRITICAL").length;
  const select = $("severity-filter");
  select.options[0].textContent = `All entities (${rows.length})`;
  select.options[1].textContent = `With a firing alert (${alerting})`;
  select.options[2].textContent = `With a critical alert (${critical})`;
  const text = $("filter").value.trim().toLowerCase();
  const shown = rows.filter(
    (r) =>
      r.name.toLowerCase().includes(text) &&
      (select.value === "all" ||
        (select.value === "alerting" ? r.severity !== null : r.severity === select.value)),
  );
  $("entity-count").textContent = String(rows.length);
  $("entity-empty").hidden = shown.length > 0;
  $("entity-empty").textContent = rows.length ? "No entity matches." : "Waiting for predictions…";
  $("entity-list").replaceChildren(...shown.map(entityItem));
}

function entityItem(row) {
  const item = el("li", row.name === state.selected ? "selected" : "");
  item.dataset.entity = row.name;
  item.dataset.severity = row.severity || "none";
  const name = el("span", "entity-name", row.name);
  name.title = row.name;
  item.append(name);
  if (row.severity) {
    const more = row.alerts.length > 1 ? ` +${row.alerts.length - 1}` : "";
    const marker = el("span", `severity-marker sev-${row.severity}`, row.severity.toLowerCase() + more);
    marker.title = row.alerts.map((a) => `${a.severity}: ${a.summary}`).join("\n");
    item.append(marker);
  } else {
    const dot = el("span", "ok-dot");
    dot.title = "no alert firing";
    item.append(dot);
  }
  item.onclick = () => selectEntity(row.name);
  return item;
}

function renderDetail() {
  const entry = state.selected ? state.entities.get(state.selected) : undefined;
  $("entity-title").textContent = state.selected || "No entity selected";
  const firing = (firingByEntity().get(state.selected) || []).map((a) => {
    const item = el("li", `sev-${a.severity}`);
    item.append(el("span", "sev", a.severity), document.createTextNode(` ${a.summary}`));
    return item;
  });
  $("entity-alerts").replaceChildren(...firing);
  renderHorizon();
  const rows = $("prediction-rows");
  if (!entry || !entry.latest) {
    $("entity-time").textContent = "";
    $("metric-tabs").replaceChildren();
    rows.replaceChildren();
    drawCharts(null, null);
    return;
  }
  const batch = entry.latest;
  $("entity-time").textContent =
    `${formatTime(batch.event_time)} · ${formatNumber(batch.latency_ms)} ms pipeline latency`;
  const metrics = [...entry.metrics.keys()].sort();
  if (!metrics.includes(state.metric)) state.metric = metrics[0] || null;
  $("metric-tabs").replaceChildren(
    ...metrics.map((metric) => {
      const tab = el("button", "tab", metric);
      tab.setAttribute("role", "tab");
      tab.setAttribute("aria-selected", String(metric === state.metric));
      tab.onclick = () => {
        state.metric = metric;
        render();
      };
      return tab;
    }),
  );
  rows.replaceChildren(
    ...batch.predictions.map((p) => {
      const row = el("tr");
      row.append(el("td", "", p.metric));
      const kind = el("td");
      kind.append(el("span", "kind", p.kind));
      row.append(kind);
      row.append(el("td", "num value", formatNumber(p.value)));
      row.append(el("td", "num", formatNumber(p.score)));
      row.append(el("td", "num", formatNumber(p.lower)));
      row.append(el("td", "num", formatNumber(p.upper)));
      row.append(el("td", "num", p.horizon_s ? formatDuration(1000 * p.horizon_s) : "now"));
      row.append(el("td", "muted", `${p.model} ${p.model_version}`));
      row.append(el("td", "drivers", formatDrivers(p.drivers)));
      return row;
    }),
  );
  const now = batch.event_time;
  const range = [now - state.view.past, now + state.view.ahead];
  drawCharts(state.metric ? entry.metrics.get(state.metric) : null, range, now);
}

function renderHorizon() {
  $("horizon").replaceChildren(
    ...VIEWS.map((view) => {
      const button = el("button", "segment", view.label);
      button.dataset.view = view.id;
      button.setAttribute("aria-pressed", String(view === state.view));
      button.title = `the last ${formatDuration(view.past)} and the forecast ${view.label} ahead`;
      button.onclick = () => {
        state.view = view;
        render();
      };
      return button;
    }),
  );
  $("chart-range").textContent =
    `last ${formatDuration(state.view.past)} · next ${formatDuration(state.view.ahead)}`;
}

function renderAlerts() {
  const firing = [...state.firing.values()].sort(
    (a, b) => severityRank(b.severity) - severityRank(a.severity) || b.starts_at - a.starts_at,
  );
  $("firing-count").textContent = String(firing.length);
  $("firing-empty").hidden = firing.length > 0;
  $("firing-list").replaceChildren(...firing.map((a) => alertItem(a, false)));
  $("feed-empty").hidden = state.feed.length > 0;
  $("alert-feed").replaceChildren(...state.feed.map((a) => alertItem(a, true)));
}

function alertItem(alert, inFeed) {
  const item = el("li", `sev-${alert.severity}`);
  const top = el("div", "alert-top");
  const left = el("span", "alert-who");
  left.append(el("span", "sev", alert.severity), document.createTextNode(` · ${alert.entity}`));
  top.append(left);
  top.append(el("span", "alert-when", formatTime(alert.event_time)));
  item.append(top);
  const summary = el("div", "alert-summary");
  if (inFeed && alert.status === "RESOLVED") {
    const lasted = alert.ends_at === null ? "" : `, lasted ${formatDuration(alert.ends_at - alert.starts_at)}`;
    summary.append(
      el("span", "resolved", "RESOLVED "),
      document.createTextNode(`${alert.rule} · fired ${formatTime(alert.starts_at)}${lasted}`),
    );
  } else {
    summary.textContent = alert.summary;
  }
  item.append(summary);
  item.onclick = () => selectEntity(alert.entity);
  return item;
}

function setupCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  return { ctx, width, height };
}

function niceTicks(lo, hi, count) {
  const span = hi - lo || Math.abs(hi) || 1;
  const step0 = span / count;
  const magnitude = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= step0);
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(v);
  return ticks;
}

const TIME_STEPS = [
  ...[1, 2, 5, 10, 15, 30].map((m) => m * MINUTE),
  ...[1, 2, 3, 6, 12].map((h) => h * HOUR),
  DAY,
];

// Ticks on round local times (every 5 min, every 6 h…), at most about seven of them.
function timeTicks(from, to) {
  const step = TIME_STEPS.find((s) => (to - from) / s <= 7) || DAY;
  const offset = new Date(from).getTimezoneOffset() * MINUTE;
  const ticks = [];
  for (let t = Math.ceil((from - offset) / step) * step + offset; t <= to; t += step) {
    ticks.push(t);
  }
  const label = (t) => {
    const date = new Date(t);
    if (step >= HOUR && date.getHours() === 0 && date.getMinutes() === 0) {
      return date.toLocaleDateString([], { month: "short", day: "numeric" });
    }
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
  };
  return ticks.map((t) => ({ t, text: label(t) }));
}

const PAD = { left: 52, right: 14, top: 10, bottom: 22 };

function frame(ctx, width, height, tRange, yRange, yTicks) {
  const x = (t) => PAD.left + ((t - tRange[0]) / (tRange[1] - tRange[0] || 1)) * (width - PAD.left - PAD.right);
  const y = (v) => height - PAD.bottom - ((v - yRange[0]) / (yRange[1] - yRange[0] || 1)) * (height - PAD.top - PAD.bottom);
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#6b7785";
  ctx.strokeStyle = "#e3e8ef";
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const v of yTicks) {
    ctx.beginPath();
    ctx.moveTo(PAD.left, Math.round(y(v)) + 0.5);
    ctx.lineTo(width - PAD.right, Math.round(y(v)) + 0.5);
    ctx.stroke();
    ctx.fillText(formatNumber(v), PAD.left - 6, y(v));
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  for (const tick of timeTicks(tRange[0], tRange[1])) {
    ctx.beginPath();
    ctx.moveTo(Math.round(x(tick.t)) + 0.5, height - PAD.bottom);
    ctx.lineTo(Math.round(x(tick.t)) + 0.5, height - PAD.bottom + 4);
    ctx.stroke();
    ctx.fillText(tick.text, x(tick.t), height - PAD.bottom + 6);
  }
  return { x, y };
}

// Draw inside the plot area (and its right margin, where the last forecast dot sits), so
// lines that run in from before the window are cut at its left edge.
function clipToPlot(ctx, width, height) {
  ctx.save();
  ctx.beginPath();
  ctx.rect(PAD.left, 0, width - PAD.left, height - PAD.bottom);
  ctx.clip();
}

function nowLine(ctx, x, height, now) {
  ctx.strokeStyle = "#94a3b8";
  ctx.lineWidth = 1;
  ctx.setLineDash([2, 3]);
  ctx.beginPath();
  ctx.moveTo(Math.round(x(now)) + 0.5, PAD.top);
  ctx.lineTo(Math.round(x(now)) + 0.5, height - PAD.bottom);
  ctx.stroke();
  ctx.setLineDash([]);
}

function line(ctx, points, x, y, color, width, dash) {
  if (!points.length) return;
  ctx.strokeStyle = color;
  ctx.lineWidth = width;
  ctx.setLineDash(dash || []);
  ctx.beginPath();
  points.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(p.v)) : ctx.moveTo(x(p.t), y(p.v))));
  ctx.stroke();
  ctx.setLineDash([]);
  if (points.length === 1) dots(ctx, points, x, y, color);
}

function dots(ctx, points, x, y, color) {
  ctx.fillStyle = color;
  for (const p of points) {
    ctx.beginPath();
    ctx.arc(x(p.t), y(p.v), 3, 0, 2 * Math.PI);
    ctx.fill();
  }
}

function placeholder(ctx, width, height, text) {
  ctx.fillStyle = "#6b7785";
  ctx.font = "13px system-ui, sans-serif";
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  ctx.fillText(text, width / 2, height / 2);
}

// The latest forecast as a path: from the value observed when it was made, through each
// horizon's point (straight lines between them), cut where the window ends.
function forecastPath(series, to) {
  const forecast = series.forecast;
  if (!forecast) return [];
  const start = series.observed.find((p) => p.t === forecast.t0);
  const points = start ? [{ t: start.t, v: start.v, lo: start.v, hi: start.v, start: true }] : [];
  points.push(...forecast.points);
  const path = [];
  for (const [i, p] of points.entries()) {
    if (p.t <= to) {
      path.push(p);
      continue;
    }
    if (i > 0) {
      const a = points[i - 1];
      const k = (to - a.t) / (p.t - a.t);
      const at = (u, w) => u + k * (w - u);
      path.push({ t: to, v: at(a.v, p.v), lo: at(a.lo, p.lo), hi: at(a.hi, p.hi), cut: true });
    }
    break;
  }
  return path;
}

// Both charts share the window (`range`, data attributes on the value chart), so they line up.
function drawCharts(series, range, now) {
  const canvas = $("value-chart");
  if (range) {
    canvas.dataset.from = String(range[0]);
    canvas.dataset.to = String(range[1]);
  } else {
    delete canvas.dataset.from;
    delete canvas.dataset.to;
  }
  drawValues(canvas, series, range, now);
  drawScores(series, range, now);
}

function drawValues(canvas, series, range, now) {
  const { ctx, width, height } = setupCanvas(canvas);
  if (!series) {
    placeholder(ctx, width, height, range ? "no value or forecast for this metric yet" : "pick an entity");
    return;
  }
  const [from, to] = range;
  const observed = series.observed.filter((p) => p.t >= from && p.t <= to);
  const path = forecastPath(series, to).filter((p) => p.t >= from);
  if (!observed.length && !path.length) {
    placeholder(ctx, width, height, "no value or forecast in this window");
    return;
  }
  const values = [...observed.map((p) => p.v), ...path.flatMap((p) => [p.v, p.lo, p.hi])];
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  const margin = (hi - lo) * 0.08 || Math.abs(hi) * 0.1 || 1;
  lo -= margin;
  hi += margin;
  const { x, y } = frame(ctx, width, height, range, [lo, hi], niceTicks(lo, hi, 5));
  clipToPlot(ctx, width, height);
  nowLine(ctx, x, height, now);
  if (path.length > 1) {
    ctx.fillStyle = getComputedStyle(document.documentElement).getPropertyValue("--band");
    ctx.beginPath();
    path.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(p.hi)) : ctx.moveTo(x(p.t), y(p.hi))));
    [...path].reverse().forEach((p) => ctx.lineTo(x(p.t), y(p.lo)));
    ctx.closePath();
    ctx.fill();
  }
  line(ctx, path, x, y, "#2563eb", 2, [6, 4]);
  dots(ctx, path.filter((p) => !p.cut && !p.start), x, y, "#2563eb");
  // One point before the window keeps the observed line running in from the left edge.
  const before = series.observed.filter((p) => p.t < from).slice(-1);
  line(ctx, [...before, ...observed], x, y, "#1f2933", 2);
  ctx.restore();
}

function drawScores(series, range, now) {
  const { ctx, width, height } = setupCanvas($("score-chart"));
  const score = series && range ? series.score.filter((p) => p.t >= range[0] && p.t <= range[1]) : [];
  if (!score.length) {
    placeholder(ctx, width, height, "no anomaly score for this metric in this window");
    return;
  }
  const { x, y } = frame(ctx, width, height, range, [0, 1], [0, 0.5, 1]);
  clipToPlot(ctx, width, height);
  nowLine(ctx, x, height, now);
  ctx.fillStyle = "rgba(217, 119, 6, 0.12)";
  ctx.beginPath();
  ctx.moveTo(x(score[0].t), y(0));
  score.forEach((p) => ctx.lineTo(x(p.t), y(p.v)));
  ctx.lineTo(x(score[score.length - 1].t), y(0));
  ctx.closePath();
  ctx.fill();
  line(ctx, score, x, y, "#d97706", 2);
  ctx.restore();
}

// ---- start -------------------------------------------------------------------------------

$("filter").addEventListener("input", renderEntities);
$("severity-filter").addEventListener("change", renderEntities);
window.addEventListener("resize", scheduleRender);
setInterval(() => {
  $("rate").textContent = `${state.received - (state.lastCount || 0)} msg/s`;
  state.lastCount = state.received;
}, 1000);

if (!apiKey) {
  showBanner("Add your API key to the address: …/?api_key=YOUR_KEY (FORESIGHT_API_KEYS).");
  setStatus("no API key", "bad");
} else {
  connect();
}
render();
