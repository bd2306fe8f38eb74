"""``neurocast evaluate``: trial-level accuracy of a classifier decoding recordings as streams.

Each recording runs through the decode engine exactly as a live stream would (100 ms windows
every 25 ms, or the model's own window and context, causal preprocessing, ONNX Runtime); a
trial's decision is the class of highest mean log-probability over the windows that end in
``[onset + tmin, onset + tmax]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from neurocast.clients.cli.arg_types import event_class
from neurocast.clients.cli.exit_codes import EXIT_OK, EXIT_USAGE

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` command."""
    p = subparsers.add_parser(
        "evaluate",
        help="trial accuracy of a classifier decoding recordings as streams",
        description=(
            "Decode recordings through the streaming engine (the model's windows every 25 ms, "
            "as live) and report trial decisions (mean log-probability of the windows ending "
            "in [onset+tmin, onset+tmax]), balanced accuracy and the confusion matrix. "
            "Example: neurocast evaluate lr.onnx S001R12.edf --event T1=left --event "
            "T2=right --json"
        ),
    )
    p.add_argument("model", type=Path, metavar="MODEL", help="classification artifact (.onnx)")
    p.add_argument("files", type=Path, nargs="+", metavar="FILE", help="annotated recordings")
    p.add_argument(
        "--event", action="append", type=event_class, required=True, help="ANNOTATION=CLASS"
    )
    p.add_argument("--eegbci", action="store_true", help="standardise EEGBCI channel names first")
    p.add_argument("--tmin", type=float, default=1.5, help="first window end after onset (s)")
    p.add_argument("--tmax", type=float, default=3.5, help="last window end after onset (s)")
    p.add_argument("--stride-ms", type=float, default=25.0, help="time between windows (ms)")
    p.add_argument(
        "--calibration",
        type=Path,
        help="unlabelled recording of the same subject: re-centre an aligned model on it first",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", type=Path, help="PNG of time-resolved accuracy after the cue")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate; exit code 2 for unreadable or unfitting input."""
    from threadpoolctl import threadpool_limits

    from neurocast.models.serving.schema import ArtifactError

    try:
        # one eigendecomposition per window: OpenBLAS threads only slow small matrices down
        with threadpool_limits(limits=1, user_api="blas"):
            report, curve = _evaluate(args)
    except (ValueError, ArtifactError, FileNotFoundError) as exc:
        print(f"neurocast evaluate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.plot:
        _plot(curve, args.plot, report["model"])
        report["plot"] = str(args.plot)
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"{report['model']}: balanced accuracy {report['balanced_accuracy']:.3f} over "
            f"{report['n_trials']} trials (windows ending {args.tmin:g}-{args.tmax:g} s after "
            f"each onset); confusion (rows true {report['classes']}): "
            f"{report['confusion_matrix']}"
        )
    return EXIT_OK


def _model(args: argparse.Namespace) -> Any:
    from neurocast.models.serving.runtime import OnnxWindowModel

    if args.calibration is None:
        return OnnxWindowModel(args.model)
    import tempfile

    from neurocast.models.training.pipeline_align import recenter_artifact
    from neurocast.streaming.io import read_recording

    raw = read_recording(args.calibration, eegbci=args.eegbci, preload=True)
    out = Path(tempfile.mkdtemp(prefix="neurocast-calibrated-")) / args.model.name
    return OnnxWindowModel(recenter_artifact(args.model, raw, out))


def _evaluate(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    from neurocast.models.analysis.decisions import (
        balanced_accuracy,
        check_events,
        confusion,
        decide,
    )
    from neurocast.models.training.trials import find_trials
    from neurocast.streaming.engine.pipeline import decode_array
    from neurocast.streaming.io import read_recording
    from neurocast.streaming.sources.base import StreamInfo

    model = _model(args)
    classes = list(model.metadata.output.class_names or [])
    event_map = dict(args.event)
    unknown = sorted({c for c in event_map.values() if c not in classes})
    if model.metadata.task != "classification" or unknown:
        raise ValueError(
            f"Model {model.name!r} decides among {classes}; --event names {unknown}. Map the "
            "annotations to the model's classes."
        )
    rows: list[dict[str, Any]] = []
    truth, pred, curves = [], [], []
    for path in args.files:
        raw = read_recording(path, eegbci=args.eegbci, preload=True)
        check_events(raw.annotations.description, event_map, str(path))
        trials = find_trials(raw, event_map)
        labels = np.array([classes.index(trials.class_names[i]) for i in trials.labels])
        stream = StreamInfo(name=path.name, info=raw.info, source_id=str(path))
        model.preprocessor(stream)  # refuses a stream that does not fit, naming why
        data = raw.get_data()
        sfreq = float(raw.info["sfreq"])
        ends, probs = [], []
        for r in decode_array(
            data, np.arange(data.shape[1]) / sfreq, stream, [model], stride_s=args.stride_ms / 1e3
        ):
            ends.append(r.window_end)
            probs.append(r.payload["probabilities"])
        e, p = np.asarray(ends), np.asarray(probs)
        dec = decide(e, p, trials.onsets, labels, sfreq, args.tmin, args.tmax)
        truth.append(dec.truth)
        pred.append(dec.predicted)
        curves.append((e, p, trials.onsets, labels, sfreq))
        for t, d, lp, n in zip(
            dec.truth, dec.predicted, dec.mean_log_prob, dec.n_windows, strict=True
        ):
            rows.append(
                {
                    "file": str(path),
                    "true": classes[t],
                    "predicted": classes[d],
                    "mean_log_prob": dict(zip(classes, lp.round(4).tolist(), strict=True)),
                    "n_windows": int(n),
                }
            )
    y, yhat = np.concatenate(truth), np.concatenate(pred)
    report = {
        "model": model.name,
        "classes": classes,
        "tmin_s": args.tmin,
        "tmax_s": args.tmax,
        "n_trials": len(y),
        "balanced_accuracy": balanced_accuracy(y, yhat, len(classes)),
        "confusion_matrix": confusion(y, yhat, len(classes)).tolist(),
        "decisions": rows,
    }
    return report, {"curves": curves, "n_classes": len(classes)}


def _plot(curve: dict[str, Any], out: Path, name: str) -> None:
    """Balanced accuracy of single windows against their end's delay after the cue."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neurocast.models.analysis.decisions import time_resolved_accuracy

    delays = np.arange(0.0, 4.0 + 1e-9, 0.05)
    per_file = [time_resolved_accuracy(e, p, o, y, s, delays) for e, p, o, y, s in curve["curves"]]
    acc = np.nanmean(np.vstack(per_file), axis=0) if per_file else delays * np.nan
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(delays, acc, lw=1.5)
    ax.axhline(1.0 / curve["n_classes"], color="grey", ls="--", lw=1, label="chance")
    ax.set_xlabel("window end after the cue (s)")
    ax.set_ylabel("balanced accuracy (single windows)")
    ax.set_title(name)
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
