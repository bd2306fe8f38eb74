// neurocast dashboard views: the incoming signal, translated against measured MEG, the
// sensor-layout topomap, retrieval against the presented image, and time-resolved decoding.
"use strict";

const SIGNAL_SECONDS = 5.0;      // incoming signal kept and shown, in seconds
const OVERLAY_SECONDS = 3.0;     // translated vs measured MEG shown, in seconds
const CORR_SECONDS = 10.0;       // span of the running correlation per sensor, in seconds
const IMAGE_DECODABLE_S = [0.1, 0.6];  // window ends after image onset that count for accuracy
const CURVE_BIN_S = 0.05;        // bin of the time-resolved decoding curves, in seconds
const CURVE_SPAN_S = { image: 1.0, class: 4.0 };
const TOPO_GRID = 48;            // topomap interpolation grid, points per side

// --------------------------------------------------------------------------- sample buffers

/** Channels × time ring of float samples with their source-clock times. */
class SampleRing {
  constructor(chNames, sfreq, seconds) {
    this.chNames = chNames;
    this.index = new Map(chNames.map((c, i) => [c, i]));
    this.sfreq = sfreq;
    this.size = Math.max(2, Math.round(seconds * sfreq));
    this.data = chNames.map(() => new Float32Array(this.size));
    this.times = new Float64Array(this.size).fill(NaN);
    this.n = 0;             // samples written so far
    this.lastTime = -Infinity;
  }

  /** Append the samples of a frame newer than what is held (windows may overlap). */
  push(frame) {
    const ns = frame.nSamples;
    const dt = 1 / frame.sfreqHz;
    for (let k = 0; k < ns; k++) {
      const t = frame.tWindowEnd - (ns - 1 - k) * dt;
      if (t <= this.lastTime + 0.5 * dt) continue;
      const slot = this.n % this.size;
      for (let c = 0; c < this.data.length; c++) this.data[c][slot] = frame.data[c * ns + k];
      this.times[slot] = t;
      this.lastTime = t;
      this.n += 1;
    }
  }

  /** Samples of channel ``c`` with times after ``t0``: [times[], values[]] in time order. */
  since(c, t0) {
    const times = [];
    const values = [];
    const count = Math.min(this.n, this.size);
    for (let i = this.n - count; i < this.n; i++) {
      const slot = i % this.size;
      if (this.times[slot] >= t0) { times.push(this.times[slot]); values.push(this.data[c][slot]); }
    }
    return [times, values];
  }

  /** The value of every channel at the held sample nearest to time t (null if none within
   * one sample period). */
  at(t) {
    let best = -1;
    let bestDist = 1 / this.sfreq;
    const count = Math.min(this.n, this.size);
    for (let i = this.n - count; i < this.n; i++) {
      const slot = i % this.size;
      const d = Math.abs(this.times[slot] - t);
      if (d <= bestDist) { best = slot; bestDist = d; }
    }
    return best < 0 ? null : this.data.map((row) => row[best]);
  }
}

// --------------------------------------------------------------------------- drawing helpers

function clearCanvas(canvas) {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  return ctx;
}

function polyline(ctx, xs, ys) {
  ctx.beginPath();
  xs.forEach((x, i) => (i === 0 ? ctx.moveTo(x, ys[i]) : ctx.lineTo(x, ys[i])));
  ctx.stroke();
}

function robustScale(values) {
  let s = 0;
  for (const v of values) s += v * v;
  return Math.sqrt(s / Math.max(1, values.length)) || 1;
}

function label(ctx, text, x, y, colour = "#8b98a5") {
  ctx.fillStyle = colour;
  ctx.font = "11px sans-serif";
  ctx.fillText(text, x, y);
}

/** Vertical marker lines at event times within [tStart, tEnd] of a time axis of width w. */
function drawMarkers(ctx, events, tStart, tEnd, w, h) {
  ctx.save();
  ctx.setLineDash([4, 3]);
  for (const e of events) {
    if (e.timestamp < tStart || e.timestamp > tEnd) continue;
    const x = ((e.timestamp - tStart) / (tEnd - tStart)) * w;
    ctx.strokeStyle = e.value.startsWith("image/") ? "#ffb347" : "#c792ea";
    polyline(ctx, [x, x], [0, h]);
    label(ctx, e.value.replace(/^image\/skimage\./, "image/"), x + 2, h - 4, ctx.strokeStyle);
  }
  ctx.restore();
}

// --------------------------------------------------------------------------- signal view

/** Incoming traces of the selected channels, stacked, with marker lines. */
function drawSignal(canvas, ring, picks, gain, events) {
  const ctx = clearCanvas(canvas);
  if (!ring || !ring.n || !picks.length) return 0;
  const tEnd = ring.lastTime;
  const tStart = tEnd - SIGNAL_SECONDS;
  const rowH = canvas.height / picks.length;
  let drawn = 0;
  picks.forEach((name, i) => {
    const c = ring.index.get(name);
    if (c === undefined) return;
    const [times, values] = ring.since(c, tStart);
    if (times.length < 2) return;
    const scale = robustScale(values) * 4 / gain;
    const mid = rowH * (i + 0.5);
    ctx.strokeStyle = COLOURS[i % COLOURS.length];
    ctx.lineWidth = 1;
    polyline(ctx, times.map((t) => ((t - tStart) / SIGNAL_SECONDS) * canvas.width),
      values.map((v) => mid - (0.5 * rowH * v) / scale));
    label(ctx, name, 4, rowH * i + 12);
    drawn += times.length;
  });
  drawMarkers(ctx, events, tStart, tEnd, canvas.width, canvas.height);
  label(ctx, `${SIGNAL_SECONDS} s · 1-40 Hz · gain ×${gain}`, canvas.width - 150, 12);
  return drawn;
}

// --------------------------------------------------------------------------- translation

/** Pairs of (translated, measured) values of one sensor at the translated samples' times. */
function pairedSamples(translated, measured, name, t0) {
  const ct = translated.index.get(name);
  const cm = measured ? measured.index.get(name) : undefined;
  if (ct === undefined || cm === undefined) return null;
  const [tt, tv] = translated.since(ct, t0);
  const [mt, mv] = measured.since(cm, t0);
  if (tt.length < 3 || mt.length < 3) return null;
  const xs = [], ys = [], ts = [];
  let j = 0;
  const tol = 0.5 / measured.sfreq;
  for (let i = 0; i < tt.length; i++) {
    while (j < mt.length - 1 && mt[j] < tt[i] - tol) j++;
    if (Math.abs(mt[j] - tt[i]) <= tol) { xs.push(tv[i]); ys.push(mv[j]); ts.push(tt[i]); }
  }
  return { xs, ys, ts };
}

function correlation(xs, ys) {
  const n = xs.length;
  if (n < 3) return NaN;
  let mx = 0, my = 0;
  for (let i = 0; i < n; i++) { mx += xs[i]; my += ys[i]; }
  mx /= n; my /= n;
  let sxy = 0, sxx = 0, syy = 0;
  for (let i = 0; i < n; i++) {
    const a = xs[i] - mx, b = ys[i] - my;
    sxy += a * b; sxx += a * a; syy += b * b;
  }
  return sxx > 0 && syy > 0 ? sxy / Math.sqrt(sxx * syy) : NaN;
}

/** Measured (white) and translated (colour) MEG of the picked sensors, with running r. */
function drawOverlay(canvas, translated, measured, picks) {
  const ctx = clearCanvas(canvas);
  const result = new Map();
  if (!translated || !translated.n || !picks.length) return result;
  const tEnd = translated.lastTime;
  const tStart = tEnd - OVERLAY_SECONDS;
  const rowH = canvas.height / picks.length;
  const x = (t) => ((t - tStart) / OVERLAY_SECONDS) * canvas.width;
  picks.forEach((name, i) => {
    const mid = rowH * (i + 0.5);
    const recent = pairedSamples(translated, measured, name, tEnd - CORR_SECONDS);
    const r = recent ? correlation(recent.xs, recent.ys) : NaN;
    result.set(name, r);
    const c = translated.index.get(name);
    const [tt, tv] = translated.since(c, tStart);
    let measuredRow = null;
    if (measured && measured.index.has(name)) measuredRow = measured.since(measured.index.get(name), tStart);
    const scale = robustScale(measuredRow && measuredRow[1].length ? measuredRow[1] : tv) * 3;
    if (measuredRow && measuredRow[0].length > 1) {
      ctx.strokeStyle = "#d7dae0";
      ctx.lineWidth = 1.5;
      polyline(ctx, measuredRow[0].map(x), measuredRow[1].map((v) => mid - (0.5 * rowH * v) / scale));
    }
    ctx.strokeStyle = COLOURS[i % COLOURS.length];
    ctx.lineWidth = 1.5;
    polyline(ctx, tt.map(x), tv.map((v) => mid - (0.5 * rowH * v) / scale));
    label(ctx, `${name}  r = ${Number.isNaN(r) ? "–" : r.toFixed(2)} (last ${CORR_SECONDS} s)`, 4, rowH * i + 12);
  });
  label(ctx, "white: simulated MEG · colour: translated from EEG", canvas.width - 300, canvas.height - 4);
  return result;
}

// --------------------------------------------------------------------------- topomap

/** 2-D layout (azimuthal equidistant projection) of sensor positions in metres. */
function projectPositions(points) {
  const n = points.length;
  const mean = [0, 1, 2].map((k) => points.reduce((s, p) => s + p[k], 0) / n);
  const zMin = Math.min(...points.map((p) => p[2]));
  // the sphere the sensors sit on is centred near the height of the lowest ones
  const centre = [mean[0], mean[1], zMin];
  const xy = points.map((p) => {
    const v = [p[0] - centre[0], p[1] - centre[1], p[2] - centre[2]];
    const r = Math.hypot(...v) || 1;
    const theta = Math.acos(Math.max(-1, Math.min(1, v[2] / r)));
    const phi = Math.atan2(v[1], v[0]);
    return [theta * Math.cos(phi), theta * Math.sin(phi)];
  });
  const extent = Math.max(...xy.map(([a, b]) => Math.hypot(a, b))) || 1;
  return xy.map(([a, b]) => [a / extent, b / extent]);
}

function colourMap(v) {
  // blue (negative) - dark - red (positive), v in [-1, 1]
  const a = Math.max(-1, Math.min(1, v));
  const r = a > 0 ? 40 + 215 * a : 40 * (1 + a);
  const b = a < 0 ? 40 - 215 * a : 40 * (1 - a);
  const g = 40 * (1 - Math.abs(a)) + 20;
  return [r, g, b];
}

/** Field of one sensor type interpolated over the layout (inverse-distance weighting). */
function drawTopomap(canvas, layout, values, title) {
  const ctx = clearCanvas(canvas);
  if (!layout || !values || !layout.xy.length) return 0;
  const w = canvas.width, h = canvas.height;
  const size = Math.min(w, h) - 24;
  const ox = (w - size) / 2, oy = 18;
  const vmax = Math.max(...values.map(Math.abs)) || 1;
  const cell = size / TOPO_GRID;
  let painted = 0;
  for (let gy = 0; gy < TOPO_GRID; gy++) {
    for (let gx = 0; gx < TOPO_GRID; gx++) {
      const px = ((gx + 0.5) / TOPO_GRID) * 2 - 1;
      const py = 1 - ((gy + 0.5) / TOPO_GRID) * 2;
      if (px * px + py * py > 1.05) continue;
      let num = 0, den = 0;
      for (let i = 0; i < layout.xy.length; i++) {
        const d2 = (layout.xy[i][0] - px) ** 2 + (layout.xy[i][1] - py) ** 2 + 1e-4;
        const wgt = 1 / (d2 * d2);
        num += wgt * values[i]; den += wgt;
      }
      const [r, g, b] = colourMap(num / den / vmax);
      ctx.fillStyle = `rgb(${r | 0},${g | 0},${b | 0})`;
      ctx.fillRect(ox + gx * cell, oy + gy * cell, cell + 0.5, cell + 0.5);
      painted += 1;
    }
  }
  ctx.fillStyle = "#0d1117";
  for (const [sx, sy] of layout.xy) {
    ctx.fillRect(ox + ((sx + 1) / 2) * size - 1, oy + ((1 - sy) / 2) * size - 1, 2, 2);
  }
  label(ctx, title, 4, 12, "#e6edf3");
  return painted;
}

// --------------------------------------------------------------------------- decoding curves

/** Accuracy per bin of time since the last event of a kind, accumulated live. */
class DecodingCurve {
  constructor(kind, chance) {
    this.kind = kind;
    this.chance = chance;
    const n = Math.round(CURVE_SPAN_S[kind] / CURVE_BIN_S);
    this.hits = new Float64Array(n);
    this.counts = new Float64Array(n);
  }

  add(sinceS, correct) {
    const b = Math.floor(sinceS / CURVE_BIN_S);
    if (b < 0 || b >= this.counts.length) return;
    this.counts[b] += 1;
    if (correct) this.hits[b] += 1;
  }

  get total() { return this.counts.reduce((a, b) => a + b, 0); }
}

/** One panel row per model: accuracy against time since the event, with chance. */
function drawCurves(canvas, curves) {
  const ctx = clearCanvas(canvas);
  const entries = [...curves.entries()];
  if (!entries.length) return 0;
  const rowH = canvas.height / entries.length;
  let points = 0;
  entries.forEach(([model, curve], row) => {
    const top = row * rowH + 16, bottom = (row + 1) * rowH - 16;
    const left = 40, right = canvas.width - 10;
    const y = (acc) => bottom - acc * (bottom - top);
    ctx.strokeStyle = "#2a3440";
    polyline(ctx, [left, left, right], [top, bottom, bottom]);
    ctx.save(); ctx.setLineDash([3, 3]); ctx.strokeStyle = "#8b98a5";
    polyline(ctx, [left, right], [y(curve.chance), y(curve.chance)]); ctx.restore();
    const n = curve.counts.length;
    const xs = [], ys = [];
    for (let b = 0; b < n; b++) {
      if (!curve.counts[b]) continue;
      xs.push(left + ((b + 0.5) / n) * (right - left));
      ys.push(y(curve.hits[b] / curve.counts[b]));
    }
    ctx.strokeStyle = COLOURS[row % COLOURS.length];
    ctx.lineWidth = 2;
    if (xs.length > 1) polyline(ctx, xs, ys);
    for (let i = 0; i < xs.length; i++) ctx.fillRect(xs[i] - 1.5, ys[i] - 1.5, 3, 3);
    ctx.lineWidth = 1;
    const what = curve.kind === "image" ? "top-5 accuracy vs time since image onset" : "accuracy vs time since class onset";
    label(ctx, `${model}: ${what} (0-${CURVE_SPAN_S[curve.kind]} s, ${curve.total} windows; dashed: chance)`, left, top - 4, "#e6edf3");
    label(ctx, "1", 28, top + 4); label(ctx, "0", 28, bottom);
    points += xs.length;
  });
  return points;
}
