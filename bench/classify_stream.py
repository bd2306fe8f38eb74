"""Live decoding of a simulated 306-channel 1 kHz MEG stream through an EfficientNet-Lite0 artifact.

An EfficientNet-Lite0 scalogram classifier (ImageNet init, partial fine-tuning) is trained
briefly on SIMULATED data from the embedded simulator (its three activity classes), exported
to an ONNX artifact (checked against torch) and then decodes one live, real-time SIMULATED
stream (306 MEG channels, 1 kHz, 25 ms chunks) every 25 ms end to end: the decode loop's
acquisition and decode threads, online preprocessing (resampling to 250 Hz), the streaming
Morlet scalogram (12 frequencies, 6-45 Hz) and the ONNX Runtime session (2 intra-op threads).

Figures: ``window_ms_p50`` / ``window_ms_p99`` (preprocessing + scalogram + inference per
decoded window, median over runs of each run's percentile), ``total_ms_p99`` (the same plus
acquisition), ``skipped_fraction`` (windows skipped because decoding fell behind / windows
due; the first 8 decoded windows of a run, the warm-up, are left out of all three;
``skipped_fraction_incl_warmup`` counts them), ``input_size`` and the model's held-out
accuracy on SIMULATED data (its training is deliberately short: the figure of interest is
speed). Target: no skipped windows (p99 < 25 ms).

Usage: ``python bench/classify_stream.py [--quick] [--input-size PX] [--seconds S]``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import _common
import numpy as np

WARM_UP = 8  # windows left out of the figures (first calls allocate)


def build_artifact(folder: Path, input_size: int, quick: bool) -> Path:
    """Train and export the EfficientNet-Lite0 classifier on SIMULATED data."""
    from neurocast.models.training.classifier import TrainConfig
    from neurocast.models.training.demo import SimulatedClassifierConfig, train_simulated_classifier

    config = SimulatedClassifierConfig(
        backbone="efficientnet-lite0",
        pretrained=True,
        input_size=input_size,
        train_s=40.0 if quick else 120.0,
        test_s=12.0 if quick else 40.0,
        train_stride_s=0.2,
        train=TrainConfig(
            max_epochs=1 if quick else 4,
            max_steps_per_epoch=4 if quick else 20,
            patience=2,
            progress=False,
        ),
    )
    path = folder / "effnet-sim.onnx"
    train_simulated_classifier(
        path,
        config,
        name="effnet-lite0-sim",
        description="EfficientNet-Lite0 scalogram classifier for a latency benchmark "
        "(SIMULATED training data, short training).",
    )
    return path


def run_live(artifact: Path, seconds: float) -> dict[str, Any]:
    """Decode a real-time simulated stream for ``seconds``; per-window costs in ms."""
    from neurocast.models.serving.runtime import OnnxWindowModel
    from neurocast.streaming.engine.loop import DecodeLoop
    from neurocast.streaming.engine.results import Result
    from neurocast.streaming.sources.simulator.source import SimulatorSource
    from neurocast.streaming.sources.specs import SimulatorSpec

    model = OnnxWindowModel(artifact, threads=2, device="cpu")
    window_ms: list[float] = []
    total_ms: list[float] = []
    skipped: list[int] = []

    def sink(r: Result) -> None:
        lat = r.latency
        window_ms.append(lat.preprocessing_ms + lat.inference_ms)
        total_ms.append(lat.acquisition_ms + lat.preprocessing_ms + lat.inference_ms)
        skipped.append(r.skipped)
        assert r.simulated

    source = SimulatorSource(
        SimulatorSpec(seed=5, modality="meg", sfreq=1000.0, realtime=True, chunk_s=0.025)
    )
    loop = DecodeLoop(source, [model], sink, stride_s=0.025)
    loop.start()
    try:
        time.sleep(seconds)
    finally:
        loop.stop()
    stats = loop.stats()
    if stats.error:
        raise RuntimeError(f"The decode loop failed: {stats.error}")
    # the first windows include the session's first-call allocations (warm-up)
    w = np.asarray(window_ms[WARM_UP:])
    t = np.asarray(total_ms[WARM_UP:])
    n_skipped = sum(skipped[WARM_UP:])
    due_all = stats.n_decoded + stats.n_skipped
    return {
        "window_ms": w,
        "total_ms": t,
        "skipped_fraction": n_skipped / max(len(w) + n_skipped, 1),
        "skipped_fraction_all": stats.n_skipped / max(due_all, 1),
        "n_decoded": float(stats.n_decoded),
        "provider": model.provider,
    }


def main() -> None:
    p = _common.parser(__doc__)
    p.add_argument("--input-size", type=int, default=96, help="backbone input in pixels")
    p.add_argument("--seconds", type=float, help="live seconds per run")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)  # training only; the machine is shared
    seconds = args.seconds or (8.0 if args.quick else 30.0)
    n_runs = 1 if args.quick else 3
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        _common.log(f"training EfficientNet-Lite0 ({args.input_size} px) on SIMULATED data")
        path = build_artifact(Path(tmp), args.input_size, args.quick)
        from neurocast.models.serving import load_artifact

        meta = load_artifact(path).metadata
        runs = []
        for i in range(n_runs):
            _common.log(f"live run {i + 1}/{n_runs}: {seconds:g} s")
            runs.append(run_live(path, seconds))
    p50, p99 = _common.median_of_runs([r["window_ms"] for r in runs])
    _, total_p99 = _common.median_of_runs([r["total_ms"] for r in runs])
    assert meta.input.scalogram is not None
    _common.emit(
        {
            "window_ms_p50": round(p50, 3),
            "window_ms_p99": round(p99, 3),
            "total_ms_p99": round(total_p99, 3),
            "skipped_fraction": float(np.median([r["skipped_fraction"] for r in runs])),
            "skipped_fraction_incl_warmup": float(
                np.median([r["skipped_fraction_all"] for r in runs])
            ),
            "n_windows": int(sum(r["n_decoded"] for r in runs)),
            "n_runs": n_runs,
            "seconds_per_run": seconds,
            "input_size": args.input_size,
            "backbone": "efficientnet-lite0 (ImageNet init)",
            "channels": len(meta.input.ch_names),
            "stream_sfreq_hz": meta.input.sfreq_hz,
            "model_rate_hz": meta.input.model_sfreq_hz,
            "n_freqs": meta.input.scalogram.n_freqs,
            "scalogram_latency_s": meta.input.scalogram.latency_s,
            "onnx_threads": 2,
            "provider": runs[0]["provider"],
            "sim_test_window_bacc": round(meta.metrics.values["test_window_balanced_accuracy"], 3),
            "simulated": True,
            "wall_s": round(time.perf_counter() - t0, 1),
        }
    )


if __name__ == "__main__":
    main()
