// neurocast dashboard: subscribes to one session over WebSocket and draws what it decodes.
"use strict";

const OUTPUTS = ["probabilities", "retrieval", "translation", "embedding", "events", "status", "signal"];
const PRESENTED_FOR_S = 0.7;  // an image counts as presented this long after its onset, seconds
const HISTORY_POINTS = 240;   // probability history shown, in results
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
  translationModel: null,
  events: [],
  thumbs: new Map(),       // thumbnail url -> object URL (fetched with the token)
  modelInfo: new Map(),    // model id -> ModelInfo (GET /v1/models)
  layout: null,            // {chNames, types, positions} of the stream (GET .../channels)
  signal: null,            // SampleRing of the incoming stream
  translated: null,        // SampleRing of translated MEG
  markers: [],             // every event, oldest first (bounded), for times since events
  curves: new Map(),       // model -> DecodingCurve
  presented: null,         // image id on screen now
  retrievalHits: 0,
  retrievalCount: 0,
  gain: 1,
  imagesSeen: new Set(),  // image ids retrieved or presented (a lower bound of the gallery)
  lastSlow: 0,
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
    translationModel: null, events: [], simulated: false, dirty: true, layout: null, signal: null,
    translated: null, markers: [], presented: null, retrievalHits: 0, retrievalCount: 0,
    imagesSeen: new Set(),
  });
  state.curves.clear();
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
        scoreClassifier(msg);
        state.probs.set(msg.model, msg.payload);
        const hist = state.history.get(msg.model) || [];
        hist.push(msg.payload.probabilities);
        if (hist.length > HISTORY_POINTS) hist.shift();
        state.history.set(msg.model, hist);
      } else if (msg.kind === "retrieval") {
        state.topk.set(msg.model, msg.payload.topk || []);
        scoreRetrieval(msg);
      }
      break;
    case "events":
      setSimulated(msg.simulated);
      for (const e of msg.events) state.events.unshift(e);
      state.events.length = Math.min(state.events.length, 50);
      state.markers.push(...msg.events);
      if (state.markers.length > 400) state.markers.splice(0, state.markers.length - 400);
      break;
    case "status":
      state.status = msg.session;
      setSimulated(msg.session.simulated);
      followSession(msg.session);
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
  if (frame.meta.kind === "signal") {
    const names = frame.meta.ch_names || [];
    if (!state.signal || state.signal.chNames.length !== names.length) {
      state.signal = new SampleRing(names, frame.sfreqHz, Math.max(SIGNAL_SECONDS, CORR_SECONDS) + 1);
      fillChannelPicks(names, frame.meta.ch_types || []);
    }
    state.signal.push(frame);
    return;
  }
  const names = frame.meta.ch_names || [];
  if (!state.translated || state.translated.chNames.length !== names.length) {
    state.translated = new SampleRing(names, frame.sfreqHz, CORR_SECONDS + 1);
    fillOverlayPicks(names, frame.meta.ch_types || []);
  }
  state.translated.push(frame);
  state.results += 1;
  state.lastWindowEnd = frame.windowEnd;
  state.lastLatency = frame.meta.latency;
  state.translationModel = frame.meta.model;
  setSimulated(frame.simulated);
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
  const stages = ["acquisition", "preprocessing", "inference", "delivery", "total", "end_to_end"];
  const budget = state.status ? state.status.max_lag_ms : Infinity;
  const rows = stages.map((stage) => {
    const tr = document.createElement("tr");
    const p = pct[stage] || {};
    if (p.p99_ms > budget) tr.className = "alert";
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

// renderTraces and the other panels of the translation, signal and decoding views: panels.js

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
    renderPresented();
    renderEvents();
    renderHealth();
    const now = performance.now();
    if (now - state.lastSlow > 150) {
      // the canvases are redrawn at most every 150 ms: enough for the eye, light on the CPU
      state.lastSlow = now;
      renderSignal();
      renderTraces();
      renderTopomaps();
      drawCurves($("curves"), state.curves);
    }
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
  $("signal-type").addEventListener("change", () => state.signal && fillChannelPicks(state.signal.chNames, null));
  $("gain-up").addEventListener("click", () => { state.gain *= 2; state.dirty = true; });
  $("gain-down").addEventListener("click", () => { state.gain /= 2; state.dirty = true; });
  for (const id of ["signal-channels", "overlay-channels"]) {
    $(id).addEventListener("change", () => { state.dirty = true; });
  }
  api("/v1/models").then((r) => {
    for (const m of r.models) state.modelInfo.set(m.id, m);
    if (state.status) followSession(state.status);
  }).catch(() => {});
  if (state.sessionId) connect(state.sessionId);
  refreshSessions();
  setInterval(refreshSessions, 5000);
  requestAnimationFrame(frame);
}

init();
