// neurocast dashboard panels: which panels a session shows, its health, the scoring of results
// against the simulator's markers, and the signal, translation and topomap canvases.
"use strict";

const KIND_PANELS = {
  probabilities: "probabilities-panel",
  retrieval: "retrieval-panel",
  translation: "translation-panel",
};
const DEFAULT_PICKS = 6;

// --------------------------------------------------------------------------- session panels

/** Show the panels of the output kinds the session's models produce, named after them. */
function followSession(session) {
  const kinds = new Map();
  for (const id of session.models) {
    const info = state.modelInfo.get(id);
    if (!info) continue;
    if (!kinds.has(info.kind)) kinds.set(info.kind, []);
    kinds.get(info.kind).push(id);
  }
  if (state.modelInfo.size) {
    for (const [kind, panel] of Object.entries(KIND_PANELS)) $(panel).hidden = !kinds.has(kind);
    $("curves-panel").hidden = !(kinds.has("probabilities") || kinds.has("retrieval"));
  }
  const describe = (id) => {
    const info = state.modelInfo.get(id);
    return info ? `${id} (${info.task}, v${info.version})` : id;
  };
  $("models").textContent = session.models.map(describe).join(", ") || "–";
  for (const kind of Object.keys(KIND_PANELS)) {
    const el = $(`${kind}-model`);
    if (el) el.textContent = (kinds.get(kind) || []).join(", ");
  }
  if (!state.layout && session.status === "running" && state.sessionId === session.id) {
    state.layout = "loading";
    api(`/v1/sessions/${session.id}/channels`)
      .then((r) => { state.layout = makeLayout(r.channels); state.dirty = true; })
      .catch(() => { state.layout = null; });
  }
}

/** Sensor positions of the stream, projected per sensor type. */
function makeLayout(channels) {
  const byType = {};
  for (const type of ["mag", "grad", "eeg"]) {
    const chs = channels.filter((c) => c.type === type && c.pos_m);
    // planar gradiometer pairs share a site: the first of each site is enough for a layout
    const seen = new Set();
    const sites = chs.filter((c) => {
      const key = c.pos_m.map((v) => v.toFixed(4)).join();
      if (seen.has(key)) return false;
      seen.add(key);
      return true;
    });
    if (sites.length >= 3) {
      byType[type] = { names: sites.map((c) => c.name), xy: projectPositions(sites.map((c) => c.pos_m)) };
    }
  }
  return byType;
}

/** Warnings shown prominently when decoding is not keeping up or the clocks disagree. */
function renderHealth() {
  const s = state.status;
  const el = $("health");
  const problems = [];
  if (s) {
    if (s.n_skipped > 0) {
      const reasons = Object.entries(s.skipped_by_reason || {}).map(([k, v]) => `${k}: ${v}`).join(", ");
      problems.push(`${s.n_skipped} windows skipped (decoding fell behind${reasons ? `; ${reasons}` : ""})`);
    }
    if (s.clock_ahead_ms > 0) problems.push(`source clock ${fmt(s.clock_ahead_ms, 1)} ms ahead of the server's`);
    const e2e = s.latency && s.latency.end_to_end;
    if (e2e && e2e.p99_ms > s.max_lag_ms) {
      problems.push(`end-to-end latency p99 ${fmt(e2e.p99_ms, 0)} ms over the ${fmt(s.max_lag_ms, 0)} ms budget`);
    }
  }
  el.hidden = !problems.length;
  el.replaceChildren(...problems.map((text) => Object.assign(document.createElement("p"), { textContent: `⚠ ${text}` })));
}

// --------------------------------------------------------------------------- scoring

/** The newest marker with this prefix at or before source time t: {value, since} or null. */
function lastMarker(prefix, t) {
  for (let i = state.markers.length - 1; i >= 0; i--) {
    const e = state.markers[i];
    if (e.timestamp <= t && e.value.startsWith(prefix)) return { value: e.value.slice(prefix.length), since: t - e.timestamp };
  }
  return null;
}

function curveFor(model, kind, chance) {
  if (!state.curves.has(model)) state.curves.set(model, new DecodingCurve(kind, chance));
  return state.curves.get(model);
}

/** Classifier: is the most probable class the class of the current block? */
function scoreClassifier(msg) {
  // the row appears at once; it fills from the first class onset on
  const curve = curveFor(msg.model, "class", 1 / msg.payload.classes.length);
  const block = lastMarker("class/", msg.t_window_end);
  if (!block) return;
  const p = msg.payload.probabilities;
  const best = msg.payload.classes[p.indexOf(Math.max(...p))];
  curve.add(block.since, best === block.value);
}

/** Retrieval: is the presented image among the top 5? */
function scoreRetrieval(msg) {
  const shown = lastMarker("image/", msg.t_window_end);
  state.presented = shown && shown.since <= PRESENTED_FOR_S ? shown.value : null;
  if (!shown) return;
  const top5 = (msg.payload.topk || []).slice(0, 5).map((t) => t.image_id);
  const hit = top5.includes(shown.value);
  // chance from the distinct images retrieved or presented so far: a lower bound of the
  // gallery's size (reached within seconds), so the chance line errs high, never low
  state.imagesSeen.add(shown.value);
  for (const t of msg.payload.topk || []) state.imagesSeen.add(t.image_id);
  const curve = curveFor(msg.model, "image", 1);
  curve.chance = Math.min(1, 5 / Math.max(5, state.imagesSeen.size));
  curve.add(shown.since, hit);
  if (shown.since >= IMAGE_DECODABLE_S[0] && shown.since <= IMAGE_DECODABLE_S[1]) {
    state.retrievalCount += 1;
    if (hit) state.retrievalHits += 1;
  }
}

// --------------------------------------------------------------------------- pickers

function selectedOptions(id) {
  return [...$(id).selectedOptions].map((o) => o.value);
}

function evenPicks(names, n) {
  const step = Math.max(1, names.length / n);
  const out = [];
  for (let i = 0; i < names.length && out.length < n; i += step) out.push(names[Math.floor(i)]);
  return out;
}

/** Channels of the chosen sensor type in the signal view's list (types given on first use). */
function fillChannelPicks(names, types) {
  if (types) {
    state.signalTypes = types;
    // start on a sensor type the stream has
    const offered = [...$("signal-type").options].map((o) => o.value);
    if (!types.includes($("signal-type").value)) {
      const present = offered.find((t) => types.includes(t));
      if (present) $("signal-type").value = present;
    }
  }
  const type = $("signal-type").value;
  const ofType = names.filter((_, i) => (state.signalTypes || [])[i] === type);
  const picked = new Set(evenPicks(ofType, DEFAULT_PICKS));
  $("signal-channels").replaceChildren(...ofType.map((c) => new Option(c, c, false, picked.has(c))));
}

/** MEG sensors in the translation overlay's list: a few magnetometers by default. */
function fillOverlayPicks(names, types) {
  const mags = names.filter((_, i) => types[i] === "mag");
  const picked = new Set(evenPicks(mags.length ? mags : names, 4));
  $("overlay-channels").replaceChildren(...names.map((c) => new Option(c, c, false, picked.has(c))));
}

// --------------------------------------------------------------------------- canvases

function renderSignal() {
  const ring = state.signal;
  const n = drawSignal($("signal"), ring, selectedOptions("signal-channels"), state.gain, state.markers);
  if (ring) $("signal-info").textContent = `${ring.chNames.length} channels at ${fmt(ring.sfreq, 0)} Hz; ${n} samples drawn`;
}

function renderTraces() {
  const t = state.translated;
  if (!t) return;
  const r = drawOverlay($("traces"), t, state.signal, selectedOptions("overlay-channels"));
  const values = [...r.values()].filter((v) => !Number.isNaN(v));
  const mean = values.length ? values.reduce((a, b) => a + b, 0) / values.length : NaN;
  $("translation-info").textContent =
    `${state.translationModel}: ${t.chNames.length} MEG channels at ${fmt(t.sfreq, 0)} Hz; ` +
    `mean running r over the picked sensors ${Number.isNaN(mean) ? "–" : mean.toFixed(2)}`;
}

function renderTopomaps() {
  const layout = state.layout && state.layout !== "loading" ? state.layout.mag : null;
  // both fields at the same instant: the newest translated sample
  const t = state.translated ? state.translated.lastTime : null;
  const field = (ring) => {
    if (!layout || !ring || t === null) return null;
    const last = ring.at(t);
    if (!last) return null;
    const values = layout.names.map((c) => (ring.index.has(c) ? last[ring.index.get(c)] : NaN));
    return values.some(Number.isNaN) ? null : values;
  };
  const stamp = t === null ? "" : ` at t=${t.toFixed(2)} s`;
  drawTopomap($("topomap"), layout, field(state.translated), `translated field (mag)${stamp}`);
  drawTopomap($("topomap-measured"), layout, field(state.signal), `simulated field (mag)${stamp}`);
}

/** Presented image next to the top-k, and the running top-5 accuracy. */
function renderPresented() {
  const root = $("presented");
  const first = [...state.topk.values()][0] || [];
  const url = first.length && state.presented && first[0].thumbnail_url
    ? first[0].thumbnail_url.replace(/[^/]+$/, encodeURIComponent(state.presented)) : null;
  const fig = document.createElement("figure");
  const src = url ? thumbnail(url) : null;
  if (src) {
    const img = Object.assign(document.createElement("img"), { src, alt: state.presented });
    fig.appendChild(img);
  }
  const cap = document.createElement("figcaption");
  cap.textContent = state.presented ? `presented: ${state.presented.replace(/^skimage\./, "")}` : "no image on screen";
  fig.appendChild(cap);
  root.replaceChildren(fig);
  document.querySelectorAll(".topk figure").forEach((f) => {
    f.classList.toggle("hit", Boolean(state.presented) && f.querySelector("figcaption").title === state.presented);
  });
  const acc = state.retrievalCount ? state.retrievalHits / state.retrievalCount : null;
  $("retrieval-accuracy").textContent =
    `running top-5 accuracy: ${acc === null ? "–" : `${(100 * acc).toFixed(1)} %`} over ${state.retrievalCount} ` +
    `windows ending ${IMAGE_DECODABLE_S[0]}-${IMAGE_DECODABLE_S[1]} s after an image onset (SIMULATED)`;
}
