"""Small helpers shared by the benchmarks in this folder.

Every benchmark runs as ``python bench/NAME.py [--quick]`` and prints one JSON object as the
last line of stdout. A benchmark imports this module as ``import _common`` (running a script
puts its folder first on ``sys.path``). Progress goes to stderr through :func:`log` so that
stdout stays clean.

Typical use::

    args = _common.parser(__doc__).parse_args()
    runs = [measure() for _ in range(2 if args.quick else 5)]  # each an array of µs
    p50, p99 = _common.median_of_runs(runs)
    _common.emit({"thing_us_p50": p50, "thing_us_p99": p99})
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

#: ``../shared/data`` beside the repository (real recordings; absent on some machines).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with ``--quick`` (finish within 60 s on 2 cores).

    Parameters
    ----------
    doc : str | None
        The benchmark's module docstring; its first line becomes the description.
    """
    p = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0] if doc else None)
    p.add_argument("--quick", action="store_true", help="short run (under 60 s on 2 cores)")
    return p


def shared_data(*parts: str) -> Path | None:
    """Path of a file or folder under ``../shared/data``, or None when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    return path if path.exists() else None


def percentiles(values: ArrayLike) -> tuple[float, float]:
    """Median and 99th percentile of ``values``."""
    p50, p99 = np.percentile(np.asarray(values, dtype=np.float64), [50, 99])
    return float(p50), float(p99)


def median_of_runs(runs: Sequence[ArrayLike]) -> tuple[float, float]:
    """Median over runs of each run's median and of each run's 99th percentile."""
    per_run = np.array([percentiles(r) for r in runs])
    return float(np.median(per_run[:, 0])), float(np.median(per_run[:, 1]))


def paced(period_s: float, n: int) -> Iterator[int]:
    """Yield ``0 .. n - 1``, each at its slot of a ``period_s`` clock (catching up, no drift)."""
    deadline = time.perf_counter()
    for i in range(n):
        while (wait := deadline - time.perf_counter()) > 0:
            time.sleep(wait)
        yield i
        deadline += period_s


def real_meg_306(sfreq: float) -> tuple[NDArray[np.float32], str] | None:
    """The 306 MEG channels of the MNE sample recording resampled to ``sfreq`` Hz.

    Returns
    -------
    data_and_label : tuple of (ndarray, str) | None
        ``(data, label)`` with data of shape (306, n_times), float32, in tesla and tesla/metre;
        None when ``../shared/data`` is absent.
    """
    path = shared_data("meg_eeg", "sample_audvis_raw.fif")
    if path is None:
        return None
    import mne

    raw = mne.io.read_raw_fif(path, preload=True, verbose="error").pick("meg")
    rate = raw.info["sfreq"]
    raw.resample(sfreq, verbose="error")
    label = f"{path.name}: 306 MEG channels, {rate:.1f} Hz resampled to {sfreq:g} Hz, looped"
    return raw.get_data().astype(np.float32), label


def log(message: str) -> None:
    """Progress message on stderr."""
    print(message, file=sys.stderr, flush=True)


def emit(figures: dict[str, Any]) -> None:
    """Print the figures as the final stdout line (one JSON object)."""
    print(json.dumps(figures), flush=True)
