// Foresight live page: subscribes to the gateway's WebSocket feed and draws what arrives.
// No framework and no build step; every string from the feed goes through textContent.
"use strict";

const HISTORY = 240; // points kept per entity and metric
const FEED = 50; // alert events kept in the feed

const params = new URLSearchParams(location.search);
const apiKey = params.get("api_key") || "";
const state = {
  entities: new Map(), // name -> {latest, metrics: Map(metric -> {observed, score, forecast})}
  firing: new Map(), // dedup_key -> alert
  feed: [],
  selected: params.get("entity"),
  metric: null,
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

function formatTime(ms) {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

function scoreColor(score) {
  if (score === undefined) return "#cbd5e1";
  if (score >= 0.8) return "#b91c1c";
  if (score >= 0.5) return "#d97706";
  return "#15803d";
}

// ---- state -------------------------------------------------------------------------------

function push(series, point) {
  if (series.length && series[series.length - 1].t === point.t) series[series.length - 1] = point;
  else series.push(point);
  if (series.length > HISTORY) series.shift();
}

function addBatch(batch) {
  let entry = state.entities.get(batch.entity);
  if (!entry) {
    entry = { latest: null, metrics: new Map() };
    state.entities.set(batch.entity, entry);
  }
  if (entry.latest && entry.latest.event_time > batch.event_time) return;
  entry.latest = batch;
  for (const p of batch.predictions) {
    let m = entry.metrics.get(p.metric);
    if (!m) {
      m = { observed: [], score: [], forecast: [] };
      entry.metrics.set(p.metric, m);
    }
    if (p.kind === "ANOMALY") {
      push(m.observed, { t: batch.event_time, v: p.value });
      push(m.score, { t: batch.event_time, v: p.score });
    } else if (p.kind === "FORECAST") {
      push(m.forecast, {
        t: batch.event_time + 1000 * (p.horizon_s || 0),
        v: p.value,
        lo: p.lower,
        hi: p.upper,
      });
    }
  }
  if (!state.selected) state.selected = batch.entity;
}

function addAlert(alert, live) {
  if (alert.status === "FIRING") state.firing.set(alert.dedup_key, alert);
  else state.firing.delete(alert.dedup_key);
  if (live) {
    state.feed.unshift(alert);
    if (state.feed.length > FEED) state.feed.pop();
  }
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
      if (state.lastId === null || !message.resumed) state.lastId = message.id;
      break;
    case "snapshot":
      if (message.topic === "predictions") addBatch(message.data);
      else addAlert(message.data, false);
      break;
    case "prediction":
      state.lastId = message.id;
      addBatch(message.data);
      break;
    case "alert":
      state.lastId = message.id;
      addAlert(message.data, true);
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

function renderEntities() {
  const list = $("entity-list");
  const filter = $("filter").value.trim().toLowerCase();
  const names = [...state.entities.keys()].sort();
  $("entity-count").textContent = String(names.length);
  $("entity-empty").hidden = names.length > 0;
  list.replaceChildren(
    ...names
      .filter((name) => name.toLowerCase().includes(filter))
      .map((name) => {
        const entry = state.entities.get(name);
        const scores = entry.latest.predictions.filter((p) => p.kind === "ANOMALY");
        const worst = scores.length ? Math.max(...scores.map((p) => p.score)) : undefined;
        const item = el("li", name === state.selected ? "selected" : "");
        item.dataset.entity = name;
        item.append(el("span", "entity-name", name));
        const dot = el("span", "score-dot");
        dot.style.background = scoreColor(worst);
        dot.title = worst === undefined ? "no anomaly score" : `anomaly score ${formatNumber(worst)}`;
        item.append(dot);
        item.onclick = () => {
          state.selected = name;
          state.metric = null;
          render();
        };
        return item;
      }),
  );
}

function renderDetail() {
  const entry = state.selected ? state.entities.get(state.selected) : undefined;
  $("entity-title").textContent = state.selected || "No entity selected";
  const rows = $("prediction-rows");
  if (!entry) {
    $("entity-time").textContent = "";
    $("metric-tabs").replaceChildren();
    rows.replaceChildren();
    drawScores(null, drawValues(null));
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
      row.append(el("td", "num", p.horizon_s ? `${p.horizon_s} s` : "now"));
      row.append(el("td", "muted", `${p.model} ${p.model_version}`));
      return row;
    }),
  );
  const series = state.metric ? entry.metrics.get(state.metric) : null;
  drawScores(series, drawValues(series));
}

function renderAlerts() {
  const firing = [...state.firing.values()].sort((a, b) => b.starts_at - a.starts_at);
  $("firing-count").textContent = String(firing.length);
  $("firing-empty").hidden = firing.length > 0;
  $("firing-list").replaceChildren(...firing.map((a) => alertItem(a, false)));
  $("alert-feed").replaceChildren(...state.feed.map((a) => alertItem(a, true)));
}

function alertItem(alert, compact) {
  const item = el("li", `sev-${alert.severity}`);
  const top = el("div", "alert-top");
  const left = el("span");
  left.append(el("span", "sev", alert.severity), document.createTextNode(` · ${alert.entity}`));
  top.append(left);
  const right = el("span");
  if (alert.status === "RESOLVED") right.append(el("span", "resolved", "RESOLVED "));
  right.append(document.createTextNode(formatTime(alert.event_time)));
  top.append(right);
  item.append(top);
  item.append(el("div", "alert-summary", compact ? alert.rule : alert.summary));
  item.onclick = () => {
    if (state.entities.has(alert.entity)) {
      state.selected = alert.entity;
      render();
    }
  };
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

const PAD = { left: 52, right: 12, top: 10, bottom: 22 };

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
  const timeTicks = 5;
  for (let i = 0; i <= timeTicks; i++) {
    const t = tRange[0] + ((tRange[1] - tRange[0]) * i) / timeTicks;
    ctx.textAlign = i === 0 ? "left" : i === timeTicks ? "right" : "center";
    ctx.fillText(formatTime(t), x(t), height - PAD.bottom + 6);
  }
  return { x, y };
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
  if (points.length === 1) {
    ctx.fillStyle = color;
    ctx.beginPath();
    ctx.arc(x(points[0].t), y(points[0].v), 3, 0, 2 * Math.PI);
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

function drawValues(series) {
  const { ctx, width, height } = setupCanvas($("value-chart"));
  const band = series ? series.forecast.filter((p) => p.lo !== null && p.hi !== null) : [];
  const all = series ? [...series.observed, ...series.forecast] : [];
  if (!all.length) {
    placeholder(ctx, width, height, series ? "no value or forecast for this metric yet" : "pick an entity");
    return null;
  }
  const times = all.map((p) => p.t);
  const values = [...all.map((p) => p.v), ...band.flatMap((p) => [p.lo, p.hi])];
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  const margin = (hi - lo) * 0.08 || Math.abs(hi) * 0.1 || 1;
  lo -= margin;
  hi += margin;
  const ticks = niceTicks(lo, hi, 5);
  const tRange = [Math.min(...times), Math.max(...times)];
  if (tRange[0] === tRange[1]) {
    tRange[0] -= 30000;
    tRange[1] += 30000;
  }
  const { x, y } = frame(ctx, width, height, tRange, [lo, hi], ticks);
  if (band.length) {
    ctx.fillStyle = getComputedStyle(document.documentElement).getPropertyValue("--band");
    ctx.beginPath();
    band.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(p.hi)) : ctx.moveTo(x(p.t), y(p.hi))));
    [...band].reverse().forEach((p) => ctx.lineTo(x(p.t), y(p.lo)));
    ctx.closePath();
    ctx.fill();
    if (band.length === 1) {
      const p = band[0];
      ctx.fillRect(x(p.t) - 4, y(p.hi), 8, y(p.lo) - y(p.hi));
    }
  }
  line(ctx, series.forecast, x, y, "#2563eb", 2, [6, 4]);
  line(ctx, series.observed, x, y, "#1f2933", 2);
  return tRange;
}

// The score chart shares the value chart's time axis (when there is one), so they line up.
function drawScores(series, valueRange) {
  const { ctx, width, height } = setupCanvas($("score-chart"));
  if (!series || !series.score.length) {
    placeholder(ctx, width, height, "no anomaly score for this metric yet");
    return;
  }
  const times = series.score.map((p) => p.t);
  const tRange = valueRange || [Math.min(...times), Math.max(...times)];
  if (tRange[0] === tRange[1]) {
    tRange[0] -= 30000;
    tRange[1] += 30000;
  }
  const { x, y } = frame(ctx, width, height, tRange, [0, 1], [0, 0.5, 1]);
  ctx.fillStyle = "rgba(217, 119, 6, 0.12)";
  ctx.beginPath();
  ctx.moveTo(x(series.score[0].t), y(0));
  series.score.forEach((p) => ctx.lineTo(x(p.t), y(p.v)));
  ctx.lineTo(x(series.score[series.score.length - 1].t), y(0));
  ctx.closePath();
  ctx.fill();
  line(ctx, series.score, x, y, "#d97706", 2);
}

// ---- start -------------------------------------------------------------------------------

$("filter").addEventListener("input", renderEntities);
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
