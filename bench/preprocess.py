"""Online preprocessing: cost per 25 ms hop for 306 channels at 1 kHz, against MNE filtering.

Our chain, timed each hop: :meth:`OnlinePreprocessor.push` of the 25 new raw samples
(resample 1 kHz → 250 Hz with the causal polyphase FIR, notch at 50 and 100 Hz, Butterworth
band-pass 1–40 Hz of order 4, all with carried state) and :meth:`OnlinePreprocessor.finalize`
of the newest 100 ms window of output (25 samples at 250 Hz; robust scaling with median/IQR
fitted on the first 2 s, clipping at ±20). Reading the raw samples from the stream's ring
buffer and keeping the window of output (the decode engine's ring buffers) are not timed here:
``bench/ring.py`` measures those reads.

The peer does the same work the stateless way, on the newest 100 ms raw window every hop:
``mne.filter.notch_filter`` (IIR, once per line harmonic below the output Nyquist frequency),
``mne.filter.filter_data`` (the same Butterworth band-pass, IIR as second-order sections),
``mne.filter.resample`` (polyphase, down by 4), then the same scaling and clipping. Both use
causal single-pass filtering (``phase="forward"`` for MNE), so the peer does no more
filtering work than ours.

Hops are paced every 25 ms, as live decoding runs them. The two sides alternate for a few
rounds; each figure is the median over rounds of that round's percentile. Figures:
``hop_us_p50``, ``hop_us_p99``, ``mne_hop_us_p50``, ``speedup_vs_mne`` (= MNE p50 / ours p50).
Target: hop p99 <= 500 µs.

Usage: ``python bench/preprocess.py [--quick]``; the last stdout line is a JSON object.
"""

from __future__ import annotations

import time

import _common
import mne
import numpy as np
from numpy.typing import NDArray

from neurocast.streaming.engine.ring import RingBuffer
from neurocast.streaming.preprocessing.filters import (
    OnlinePreprocessor,
    PreprocessSpec,
    fit_robust_scaler,
)
from neurocast.streaming.sources.base import StreamInfo

N_CHANNELS = 306
SFREQ = 1000.0
HOP = 25  # raw samples per hop: 25 ms
WINDOW_S = 0.1
OUT_HZ = 250.0
LINE_HZ = 50.0
BAND_HZ = (1.0, 40.0)
ORDER = 4
CLIP = 20.0
WARMUP_HOPS = 40  # filters settling, caches: ignored


def _signal() -> tuple[NDArray[np.float32], str]:
    """Real MEG when ../shared/data is there, otherwise Gaussian noise (labelled so)."""
    real = _common.real_meg_306(SFREQ)
    if real is not None:
        return real
    rng = np.random.default_rng(0)
    noise = (rng.standard_normal((N_CHANNELS, int(10 * SFREQ))) * 1e-12).astype(np.float32)
    return noise, "Gaussian noise (simulated; ../shared/data absent)"


def _stream() -> StreamInfo:
    info = mne.create_info([f"MEG{i:04d}" for i in range(N_CHANNELS)], SFREQ, "mag")
    return StreamInfo("bench 306 MEG at 1 kHz", info)


def _spec(data: NDArray[np.float32], stream: StreamInfo) -> PreprocessSpec:
    """The benchmark's spec, with robust scaling fitted on the first 2 s of filtered data."""
    spec = PreprocessSpec(
        line_freq_hz=LINE_HZ,
        l_freq_hz=BAND_HZ[0],
        h_freq_hz=BAND_HZ[1],
        filter_order=ORDER,
        resample_hz=OUT_HZ,
        clip=CLIP,
    )
    pre = OnlinePreprocessor(spec, stream)
    center, scale = fit_robust_scaler(pre.push(data[:, : int(2 * SFREQ)]))
    return spec.model_copy(
        update={"robust_center": center.tolist(), "robust_scale": scale.tolist()}
    )


class _Feed:
    """The raw stream: writes the looped recording into a ring buffer, one hop at a time."""

    def __init__(self, data: NDArray[np.float32]) -> None:
        self.data = data
        self.ring = RingBuffer(N_CHANNELS, int(30 * SFREQ), SFREQ)
        self.k = 0

    def step(self) -> None:
        n = self.data.shape[1] // HOP
        a = (self.k % n) * HOP
        ts = (self.k * HOP + np.arange(HOP)) / SFREQ
        self.ring.write(self.data[:, a : a + HOP].T, ts)
        self.k += 1


def _run_ours(data: NDArray[np.float32], spec: PreprocessSpec, n_hops: int) -> NDArray:
    """Hop times in µs of our online chain."""
    stream = _stream()
    pre = OnlinePreprocessor(spec, stream)
    history = RingBuffer(N_CHANNELS, int(5 * pre.sfreq_out), pre.sfreq_out)
    n_window = round(WINDOW_S * pre.sfreq_out)
    feed = _Feed(data)
    times = []
    window = np.zeros((N_CHANNELS, n_window), dtype=np.float32)
    for i in _common.paced(HOP / SFREQ, n_hops + WARMUP_HOPS):
        feed.step()
        stop = feed.ring.n_written
        new = feed.ring.read(stop - HOP, stop).data
        t0 = time.perf_counter_ns()
        y = pre.push(new)
        t1 = time.perf_counter_ns()
        if y.shape[1]:
            n = history.n_written
            history.write(y.T, (n + np.arange(y.shape[1])) / pre.sfreq_out)
            if history.n_written >= n_window:
                window = history.latest(n_window).data
        t2 = time.perf_counter_ns()
        x = pre.finalize(window)
        times.append(t1 - t0 + time.perf_counter_ns() - t2)
        if i >= WARMUP_HOPS:
            assert x.shape == (N_CHANNELS, n_window) and history.n_written >= n_window
    return np.array(times[WARMUP_HOPS:]) / 1e3


def _run_mne(data: NDArray[np.float32], spec: PreprocessSpec, n_hops: int) -> NDArray:
    """Hop times in µs of the same work done with MNE's filter functions on each window."""
    center = np.asarray(spec.robust_center)[:, None]
    inv_scale = 1.0 / np.asarray(spec.robust_scale)[:, None]
    iir = {"order": ORDER, "ftype": "butter", "output": "sos"}
    harmonics = [f for f in LINE_HZ * np.arange(1, 10) if f < OUT_HZ / 2]
    n_window = round(WINDOW_S * SFREQ)
    feed = _Feed(data)
    for _ in range(n_window // HOP):
        feed.step()
    times = []
    for _ in _common.paced(HOP / SFREQ, n_hops + 2):
        feed.step()
        window = feed.ring.latest(n_window).data
        t0 = time.perf_counter_ns()
        x = window.astype(np.float64)
        for f in harmonics:
            x = mne.filter.notch_filter(x, SFREQ, f, method="iir", phase="forward", verbose="error")
        x = mne.filter.filter_data(
            x, SFREQ, *BAND_HZ, method="iir", iir_params=iir, phase="forward", verbose="error"
        )
        x = mne.filter.resample(x, down=SFREQ / OUT_HZ, method="polyphase", verbose="error")
        x = np.clip((x - center) * inv_scale, -CLIP, CLIP).astype(np.float32)
        times.append(time.perf_counter_ns() - t0)
    return np.array(times[2:]) / 1e3  # the first calls import and cache MNE internals


def main() -> None:
    args = _common.parser(__doc__).parse_args()
    rounds, n_hops, n_mne = (2, 320, 60) if args.quick else (5, 1200, 200)
    data, label = _signal()
    spec = _spec(data, _stream())
    ours, peer = [], []
    for r in range(rounds):
        ours.append(_run_ours(data, spec, n_hops))
        peer.append(_run_mne(data, spec, n_mne))
        _common.log(
            f"round {r + 1}/{rounds}: ours p50 {np.median(ours[-1]):.1f} µs, p99 "
            f"{np.percentile(ours[-1], 99):.1f} µs; MNE p50 {np.median(peer[-1]):.0f} µs"
        )
    p50, p99 = _common.median_of_runs(ours)
    mne_p50, mne_p99 = _common.median_of_runs(peer)
    _common.emit(
        {
            "hop_us_p50": round(p50, 2),
            "hop_us_p99": round(p99, 2),
            "mne_hop_us_p50": round(mne_p50, 2),
            "mne_hop_us_p99": round(mne_p99, 2),
            "speedup_vs_mne": round(mne_p50 / p50, 1),
            "rounds": rounds,
            "hops_per_round": n_hops,
            "mne_hops_per_round": n_mne,
            "chain": (
                f"{N_CHANNELS} ch {SFREQ:g} Hz -> resample {OUT_HZ:g} Hz, notch "
                f"{LINE_HZ:g} Hz + harmonics, band-pass {BAND_HZ[0]:g}-{BAND_HZ[1]:g} Hz order "
                f"{ORDER}, robust scaling, clip {CLIP:g}"
            ),
            "data": label,
            "quick": args.quick,
        }
    )


if __name__ == "__main__":
    main()
