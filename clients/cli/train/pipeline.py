"""``neurocast train pipeline``: classical and Riemannian decoders as artifacts.

CSP+LDA, filter-bank CSP, Riemannian tangent space + logistic regression, MDM, xDAWN +
tangent space and samples + logistic regression, trained on the windows the engine will see
and served torch-free (numpy steps + ONNX Runtime).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from neurocast.clients.cli.arg_types import event_class
from neurocast.clients.cli.train.common import run_training

RECIPES = ("csp-lda", "fbcsp-lda", "ts-lr", "mdm", "xdawn-ts-lr", "vec-lr")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train pipeline``."""
    p = sub.add_parser(
        "pipeline",
        help="classical / Riemannian decoder (CSP, FBCSP, tangent space, MDM, xDAWN)",
        description=(
            "Train a classical or Riemannian decoder on annotated recordings and export it as "
            "an artifact served without torch or scikit-learn. The model reads the last "
            "second of signal every 25 ms. Example: neurocast train pipeline --recipe ts-lr "
            "--data S001R04.edf S001R08.edf --eegbci --event T1=left --event T2=right "
            "--out lr.onnx"
        ),
    )
    p.add_argument("--recipe", required=True, choices=RECIPES, help="decoder family")
    p.add_argument("--data", nargs="+", required=True, type=Path, help="training recordings")
    p.add_argument(
        "--event", action="append", type=event_class, required=True, help="ANNOTATION=CLASS"
    )
    p.add_argument("--out", required=True, type=Path, help="artifact to write (.onnx)")
    p.add_argument(
        "--eegbci",
        action="store_true",
        help="standardise PhysioNet EEGBCI channel names; the raw names travel in the artifact",
    )
    p.add_argument("--tmin", type=float, default=1.5, help="first window end after onset (s)")
    p.add_argument("--tmax", type=float, default=3.5, help="last window end after onset (s)")
    p.add_argument("--context-ms", type=float, default=900.0, help="history before each window")
    p.add_argument("--name", help="model name (default: the output file's stem)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train and export."""
    return run_training(lambda: _train(args))


def _train(args: argparse.Namespace) -> str:
    from neurocast.models.analysis.decisions import check_events
    from neurocast.models.serving.schema import Provenance
    from neurocast.models.training.recipes.pipeline import TrialRecording, train_pipeline
    from neurocast.models.training.trials import find_trials
    from neurocast.streaming.engine.windows import WindowSpec
    from neurocast.streaming.io import read_recording
    from neurocast.streaming.sources.base import StreamInfo

    event_map = dict(args.event)
    recordings, aliases, class_names = [], {}, None
    for path in args.data:
        raw = read_recording(path, eegbci=args.eegbci, preload=True)
        if args.eegbci:
            original = read_recording(path).ch_names
            aliases.update({a: b for a, b in zip(original, raw.ch_names, strict=True) if a != b})
        check_events(raw.annotations.description, event_map, str(path))
        trials = find_trials(raw, event_map)
        class_names = trials.class_names
        stream = StreamInfo(name=path.name, info=raw.info, source_id=str(path))
        recordings.append(TrialRecording(raw.get_data(), stream, trials.onsets, trials.labels))
    assert class_names is not None
    artifact = train_pipeline(
        args.recipe,
        recordings,
        class_names,
        args.out,
        window=WindowSpec(window_s=0.1, stride_s=0.025, context_s=args.context_ms / 1e3),
        tmin_s=args.tmin,
        tmax_s=args.tmax,
        ch_aliases=aliases,
        name=args.name,
        provenance=Provenance(
            data="; ".join(str(p) for p in args.data),
            split="all trials of the given recordings",
        ),
    )
    return f"wrote {artifact.path} ({artifact.size_bytes / 1e3:.0f} kB, {args.recipe})"
