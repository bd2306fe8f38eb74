// neurocast dashboard: subscribes to one session over WebSocket and draws what it decodes.
"use strict";

const OUTPUTS = ["probabilities", "retrieval", "translation", "embedding", "events", "status"];
const HISTORY_POINTS = 240;   // probability history shown, in results
const TRACE_SECONDS = 2.0;    // translated MEG shown, in seconds
const TRACE_CHANNELS = 12;    // channels drawn (evenly picked)
const COLOURS = ["#4fb3ff", "#5ad17a", "#ffb347", "#ff6b6b", "#c792ea", "#7fdbca", "#f78c6c", "#d7dae0"];

const $ = (id) => document.getElementById(id);

const state = {
  token: null,
  sessionId: null,
  ws: null,
  retry: null,
  dirty: true,
  simulated: false,
  results: 0,
  dropped: 0,
  lastWindowEnd: null,
  lastLatency: null,
  status: null,
  probs: new Map(),        // model -> {classes, probabilities}
  history: new Map(),      // model -> array of probability arrays
  topk: new Map(),         // model -> [{image_id, label, score, thumbnail_url}]
  traces: null,            // {model, chNames, picks, sfreq, buffers, lastEnd, streamSfreq}
  events: [],
  thumbs: new Map(),       // thumbnail url -> object URL (fetched with the token)
};

function authHeaders() {
  return state.token ? { Authorization: `Bearer ${state.token}` } : {};
}

function showMessage(text) {
  const el = $("message");
  el.textContent = text;
  el.hidden = !text;
}

function setConnection(text, cls) {
  const el = $("connection");
  el.textContent = text;
  el.className = `pill ${cls || ""}`;
}

async function api(path) {
  const response = await fetch(path, { headers: authHeaders() });
  if (response.status === 401) {
    $("token-form").hidden = false;
    throw new Error("This server needs a token: enter it above.");
  }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(detail);
  }
  return response.json();
}

// ------------------------------------------------------------------------------------ sessions

async function refreshSessions() {
  let sessions;
  try {
    sessions = (await api("/v1/sessions")).sessions;
  } catch (err) {
    showMessage(err.message);
    return;
  }
  const select = $("session-select");
  const known = new Set(sessions.map((s) => s.id));
  select.replaceChildren(...sessions.map((s) => {
    const opt = document.createElement("option");
    opt.value = s.id;
    opt.textContent = `${s.name || s.id} · ${s.source.kind} · ${s.status}${s.simulated ? " · SIMULATED" : ""}`;
    return opt;
  }));
  if (!sessions.length) {
    select.replaceChildren(new Option("(no session)", ""));
    showMessage("No session yet: start one with POST /v1/sessions or `neurocast demo`.");
    return;
  }
  if (!state.sessionId || !known.has(state.sessionId)) {
    const running = sessions.find((s) => s.status === "running") || sessions[0];
    select.value = running.id;
    connect(running.id);
  } else {
    select.value = state.sessionId;
  }
}

function resetView() {
  Object.assign(state, {
    results: 0, dropped: 0, lastWindowEnd: null, lastLatency: null, status: null,
    traces: null, events: [], simulated: false, dirty: true,
  });
  state.probs.clear();
  state.history.clear();
  state.topk.clear();
  $("probabilities").replaceChildren();
  $("retrieval").replaceChildren();
}

function connect(sessionId) {
  if (state.ws) {
    state.ws.onclose = null;
    state.ws.close();
  }
  clearTimeout(state.retry);
  state.sessionId = sessionId;
  resetView();
  if (!sessionId) return;
  const params = new URLSearchParams(window.location.search);
  params.set("session", sessionId);
  history.replaceState(null, "", `?${params}${window.location.hash}`);
  const scheme = window.location.protocol === "https:" ? "wss" : "ws";
  const query = state.token ? `?token=${encodeURIComponent(state.token)}` : "";
  const ws = new WebSocket(`${scheme}://${window.location.host}/v1/sessions/${sessionId}/stream${query}`);
  ws.binaryType = "arraybuffer";
  state.ws = ws;
  setConnection("connecting", "");
  ws.onopen = () => {
    ws.send(JSON.stringify({ type: "subscribe", outputs: OUTPUTS, decimate: Number($("decimate").value) }));
    setConnection("live", "live");
    showMessage("");
  };
  ws.onmessage = (ev) => {
    if (typeof ev.data === "string") handleMessage(JSON.parse(ev.data));
    else handleFrame(decodeSignalFrame(ev.data));
    state.dirty = true;
  };
  ws.onclose = (ev) => {
    setConnection(ev.code === 1000 ? "session ended" : "disconnected", "error");
    if (ev.code !== 1000) {
      // find out why (token? deleted session?) and try again
      api(`/v1/sessions/${sessionId}`).catch((err) => showMessage(err.message));
      state.retry = setTimeout(() => connect(sessionId), 2000);
    }
  };
}

// ------------------------------------------------------------------------------------ messages

function setSimulated(flag) {
  state.simulated = state.simulated || Boolean(flag);
}

function handleMessage(msg) {
  switch (msg.type) {
    case "subscribed":
      setSimulated(msg.simulated);
      break;
    case "result":
      state.results += 1;
      state.lastWindowEnd = msg.window_end;
      state.lastLatency = msg.latency;
      setSimulated(msg.simulated);
      if (msg.kind === "probabilities") {
        state.probs.set(msg.model, msg.payload);
        const hist = state.history.get(msg.model) || [];
        hist.push(msg.payload.probabilities);
        if (hist.length > HISTORY_POINTS) hist.shift();
        state.history.set(msg.model, hist);
      } else if (msg.kind === "retrieval") {
        state.topk.set(msg.model, msg.payload.topk || []);
      }
      break;
    case "events":
      setSimulated(msg.simulated);
      for (const e of msg.events) state.events.unshift(e);
      state.events.length = Math.min(state.events.length, 50);
      break;
    case "status":
      state.status = msg.session;
      setSimulated(msg.session.simulated);
      break;
    case "dropped":
      state.dropped = msg.total_dropped;
      break;
    case "error":
      showMessage(msg.detail);
      break;
    default:
      break;
  }
}

function handleFrame(frame) {
  state.results += 1;
  state.lastWindowEnd = frame.windowEnd;
  state.lastLatency = frame.meta.latency;
  setSimulated(frame.simulated);
  const streamSfreq = state.status && state.status.stream ? state.status.stream.sfreq_hz : null;
  let t = state.traces;
  if (!t || t.model !== frame.meta.model || t.nChannels !== frame.nChannels) {
    const n = Math.max(1, Math.round(TRACE_SECONDS * frame.sfreqHz));
    const step = Math.max(1, frame.nChannels / TRACE_CHANNELS);
    const picks = [];
    for (let c = 0; c < frame.nChannels && picks.length < TRACE_CHANNELS; c += step) picks.push(Math.floor(c));
    t = state.traces = {
      model: frame.meta.model, nChannels: frame.nChannels, chNames: frame.meta.ch_names || [],
      picks, sfreq: frame.sfreqHz, buffers: picks.map(() => new Float32Array(n)), lastEnd: null,
    };
  }
  // append only the samples that are new since the previous window (windows overlap)
  let fresh = frame.nSamples;
  if (t.lastEnd !== null && streamSfreq) {
    fresh = Math.round(((frame.windowEnd - t.lastEnd) / streamSfreq) * frame.sfreqHz);
  }
  fresh = Math.max(0, Math.min(frame.nSamples, fresh));
  t.lastEnd = frame.windowEnd;
  t.picks.forEach((ch, i) => {
    const buf = t.buffers[i];
    buf.copyWithin(0, fresh);
    const row = frame.data.subarray(ch * frame.nSamples, (ch + 1) * frame.nSamples);
    buf.set(row.subarray(frame.nSamples - fresh), buf.length - fresh);
  });
}

// ------------------------------------------------------------------------------------ drawing

function fmt(x, digits = 2) {
  return x === null || x === undefined || Number.isNaN(x) ? "–" : Number(x).toFixed(digits);
}

function renderStatus() {
  const s = state.status;
  $("simulated-badge").hidden = !state.simulated;
  $("result-count").textContent = String(state.results);
  $("last-window-end").textContent = state.lastWindowEnd === null ? "–" : String(state.lastWindowEnd);
  $("dropped").textContent = String(state.dropped);
  if (s) {
    $("state").textContent = s.status + (s.error ? ` (${s.error})` : "");
    $("stream").textContent = s.stream
      ? `${s.stream.name} · ${s.stream.n_channels} ch · ${fmt(s.stream.sfreq_hz, 1)} Hz`
      : "–";
    $("rate").textContent = `${fmt(s.decode_rate_hz, 1)} windows/s`;
    $("decoded").textContent = String(s.n_decoded);
    $("skipped").textContent = String(s.n_skipped);
  }
}

function renderLatency() {
  const last = { ...(state.lastLatency || {}) };
  if (state.lastLatency) {
    last.total_ms = last.acquisition_ms + last.preprocessing_ms + last.inference_ms;
    delete last.delivery_ms; // measured by the server as it sends: see the percentiles
  }
  const pct = (state.status && state.status.latency) || {};
  const stages = ["acquisition", "preprocessing", "inference", "delivery", "total"];
  const rows = stages.map((stage) => {
    const tr = document.createElement("tr");
    const p = pct[stage] || {};
    for (const v of [stage, fmt(last[`${stage}_ms`]), fmt(p.p50_ms), fmt(p.p99_ms)]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.appendChild(td);
    }
    return tr;
  });
  document.querySelector("#latency tbody").replaceChildren(...rows);
}

function renderProbabilities() {
  const root = $("probabilities");
  if (!state.probs.size) {
    if (!root.querySelector(".empty")) root.innerHTML = '<p class="empty">No classifier results yet.</p>';
    return;
  }
  for (const [model, payload] of state.probs) {
    let block = root.querySelector(`[data-model="${CSS.escape(model)}"]`);
    if (!block) {
      root.querySelector(".empty")?.remove();
      block = document.createElement("div");
      block.className = "model-block";
      block.dataset.model = model;
      block.innerHTML = `<h3></h3>`;
      block.querySelector("h3").textContent = model;
      payload.classes.forEach((name, i) => {
        const row = document.createElement("div");
        row.className = "prob-row";
        row.dataset.class = name;
        row.innerHTML = '<span class="prob-name"></span><div class="prob-bar"><div class="prob-fill"></div></div><span class="prob-value"></span>';
        row.querySelector(".prob-name").textContent = name;
        row.querySelector(".prob-fill").style.background = COLOURS[i % COLOURS.length];
        block.appendChild(row);
      });
      root.appendChild(block);
    }
    const p = payload.probabilities;
    const best = p.indexOf(Math.max(...p));
    block.querySelectorAll(".prob-row").forEach((row, i) => {
      row.classList.toggle("top", i === best);
      row.querySelector(".prob-fill").style.width = `${(100 * (p[i] || 0)).toFixed(1)}%`;
      row.querySelector(".prob-value").textContent = fmt(p[i], 3);
    });
  }
  drawHistory();
}

function drawHistory() {
  const canvas = $("prob-history");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const first = state.history.keys().next();
  if (first.done) return;
  const hist = state.history.get(first.value);
  const n = hist.length;
  if (n < 2) return;
  const nClasses = hist[0].length;
  const dx = canvas.width / (HISTORY_POINTS - 1);
  for (let c = 0; c < nClasses; c++) {
    ctx.strokeStyle = COLOURS[c % COLOURS.length];
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    hist.forEach((p, i) => {
      const x = (HISTORY_POINTS - n + i) * dx;
      const y = canvas.height - 4 - (canvas.height - 8) * (p[c] || 0);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}

function thumbnail(url) {
  if (!url) return null;
  if (state.thumbs.has(url)) return state.thumbs.get(url);
  state.thumbs.set(url, null);
  fetch(url, { headers: authHeaders() })
    .then((r) => (r.ok ? r.blob() : null))
    .then((blob) => {
      if (blob) { state.thumbs.set(url, URL.createObjectURL(blob)); state.dirty = true; }
    })
    .catch(() => {});
  return null;
}

function renderRetrieval() {
  const root = $("retrieval");
  if (!state.topk.size) {
    if (!root.querySelector(".empty")) root.innerHTML = '<p class="empty">No retrieval results yet.</p>';
    return;
  }
  const blocks = [];
  for (const [model, topk] of state.topk) {
    const block = document.createElement("div");
    block.className = "model-block";
    const h = document.createElement("h3");
    h.textContent = model;
    const row = document.createElement("div");
    row.className = "topk";
    for (const item of topk) {
      const fig = document.createElement("figure");
      const src = thumbnail(item.thumbnail_url);
      let img;
      if (src) {
        img = document.createElement("img");
        img.src = src;
        img.alt = item.label;
      } else {
        img = document.createElement("div");
        img.className = "placeholder";
        img.textContent = item.label;
      }
      const cap = document.createElement("figcaption");
      cap.textContent = `${item.label} · ${fmt(item.score, 2)}`;
      cap.title = item.image_id;
      fig.append(img, cap);
      row.appendChild(fig);
    }
    block.append(h, row);
    blocks.push(block);
  }
  root.replaceChildren(...blocks);
}

function renderTraces() {
  const t = state.traces;
  const canvas = $("traces");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!t) return;
  $("translation-info").textContent =
    `${t.model}: ${t.nChannels} channels at ${fmt(t.sfreq, 1)} Hz, ${t.picks.length} shown`;
  $("translation-info").className = "";
  const rowH = canvas.height / t.picks.length;
  t.buffers.forEach((buf, i) => {
    let scale = 0;
    for (const v of buf) scale = Math.max(scale, Math.abs(v));
    scale = scale || 1;
    const mid = rowH * (i + 0.5);
    ctx.strokeStyle = COLOURS[i % COLOURS.length];
    ctx.lineWidth = 1;
    ctx.beginPath();
    const dx = canvas.width / (buf.length - 1 || 1);
    for (let k = 0; k < buf.length; k++) {
      const y = mid - (0.45 * rowH * buf[k]) / scale;
      if (k === 0) ctx.moveTo(0, y); else ctx.lineTo(k * dx, y);
    }
    ctx.stroke();
    ctx.fillStyle = "#8b98a5";
    ctx.font = "10px sans-serif";
    ctx.fillText(t.chNames[t.picks[i]] || `ch ${t.picks[i]}`, 4, rowH * i + 11);
  });
}

function renderEvents() {
  const items = state.events.slice(0, 30).map((e) => {
    const li = document.createElement("li");
    li.textContent = `${fmt(e.timestamp, 3)} s  ${e.value}`;
    return li;
  });
  $("events").replaceChildren(...items);
}

function frame() {
  if (state.dirty) {
    state.dirty = false;
    renderStatus();
    renderLatency();
    renderProbabilities();
    renderRetrieval();
    renderTraces();
    renderEvents();
  }
  requestAnimationFrame(frame);
}

// ------------------------------------------------------------------------------------ start

function init() {
  const hash = new URLSearchParams(window.location.hash.slice(1));
  if (hash.get("token")) {
    sessionStorage.setItem("neurocast-token", hash.get("token"));
    history.replaceState(null, "", window.location.pathname + window.location.search);
  }
  state.token = sessionStorage.getItem("neurocast-token");
  state.sessionId = new URLSearchParams(window.location.search).get("session");
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.token = $("token-input").value.trim();
    sessionStorage.setItem("neurocast-token", state.token);
    $("token-form").hidden = true;
    showMessage("");
    refreshSessions();
  });
  $("session-select").addEventListener("change", (ev) => connect(ev.target.value));
  $("decimate").addEventListener("change", () => connect(state.sessionId));
  if (state.sessionId) connect(state.sessionId);
  refreshSessions();
  setInterval(refreshSessions, 5000);
  requestAnimationFrame(frame);
}

init();
