"""``neurocast analyze mi FILE...``: EEG–MEG mutual information against sensor distance."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from neurocast.clients.cli.exit_codes import EXIT_OK, EXIT_USAGE


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``analyze`` command and its ``mi`` analysis."""
    parser = subparsers.add_parser("analyze", help="analyses of recordings")
    sub = parser.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)
    mi = sub.add_parser(
        "mi",
        help="EEG-MEG mutual information per sensor pair against distance",
        description=(
            "Mutual information (bits, k-nearest-neighbour estimator, maximised over lags) "
            "between every analysed EEG electrode and MEG sensor, against their distance in "
            "head coordinates. Prints one JSON object per file and writes a PNG plot. Files "
            "need simultaneous EEG and MEG with sensor positions (FIF, FieldTrip MAT, ...)."
        ),
    )
    mi.add_argument("files", type=Path, nargs="+", metavar="FILE")
    mi.add_argument("--out", type=Path, default=Path("mi_vs_distance.png"), help="PNG plot")
    mi.add_argument("--pairs", type=int, default=1500, help="random pairs per file (0: all)")
    mi.add_argument("--max-lag-ms", type=float, default=20.0, help="lags searched, +/- ms")
    mi.add_argument("--lag-step-ms", type=float, default=5.0, help="step between lags, ms")
    mi.add_argument("--l-freq", type=float, default=1.0, help="high-pass, Hz")
    mi.add_argument("--h-freq", type=float, default=40.0, help="low-pass, Hz")
    mi.add_argument("--seed", type=int, default=0)
    mi.set_defaults(func=_run_mi)


def _run_mi(args: argparse.Namespace) -> int:
    from neurocast.models.analysis.mutual_info import eeg_meg_mutual_info, plot_mi_vs_distance
    from neurocast.streaming.io import read_recording

    results = {}
    for path in args.files:
        try:
            raw = read_recording(path)
            res = eeg_meg_mutual_info(
                raw,
                l_freq_hz=args.l_freq,
                h_freq_hz=args.h_freq,
                max_lag_ms=args.max_lag_ms,
                lag_step_ms=args.lag_step_ms,
                n_pairs=args.pairs or None,
                seed=args.seed,
            )
        except ValueError as exc:
            print(f"neurocast analyze mi: {exc}")
            return EXIT_USAGE
        label = path.name + (" (SIMULATED)" if "SIMULATED" in res.description else "")
        results[label] = res
        print(
            json.dumps(
                {"file": str(path), "simulated": "SIMULATED" in res.description, **res.summary()}
            )
        )
    plot_mi_vs_distance(results, str(args.out))
    print(f"plot written to {args.out}")
    return EXIT_OK
