"""``neurocast info FILE``: what MNE reads in a recording.

Works on anything :func:`neurocast.streaming.io.read_recording` reads (FIF, EDF/BDF,
BrainVision, EEGLAB, KIT, FieldTrip MAT, ...): channel counts by type, sampling rate,
duration, annotations and stim-channel events,
and whether the recording is simulated (its description carries the SIMULATED tag that
every neurocast simulator output has).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from neurocast.clients.cli.exit_codes import EXIT_OK, EXIT_USAGE
from neurocast.streaming.sources.base import SIMULATED_TAG

logger = logging.getLogger(__name__)

_MAX_LISTED = 8  # distinct annotation texts listed per group before summarising


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``info`` command."""
    parser = subparsers.add_parser(
        "info",
        help="describe a recording (any format MNE reads, FieldTrip MAT included)",
        description=(
            "Print what MNE reads in a recording: channels by type, sampling rate, duration, "
            "annotations, stim-channel events and whether it is simulated. Exit code 2 if the "
            "file cannot be read."
        ),
    )
    parser.add_argument("file", type=Path, metavar="FILE", help="the recording")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.set_defaults(func=_run)


def describe(path: Path) -> dict[str, Any]:
    """Summary of a recording as plain data.

    Parameters
    ----------
    path : Path
        Any file :func:`mne.io.read_raw` reads.

    Returns
    -------
    summary : dict
        ``file``, ``reader``, ``simulated``, ``n_channels``, ``channel_types`` (type to
        count), ``sfreq_hz``, ``n_samples``, ``duration_s``, ``meas_date``, ``highpass_hz``,
        ``lowpass_hz``, ``bads``, ``annotations`` (text to count), ``events`` (stim value
        to count), ``description``.

    Raises
    ------
    ValueError
        If the file does not exist or MNE cannot read it.
    """
    from neurocast.streaming.io import is_simulated, read_recording

    raw = read_recording(path)
    info = raw.info
    description = info["description"] or ""
    sfreq = float(info["sfreq"])
    return {
        "file": str(path),
        "reader": type(raw).__name__,
        "simulated": is_simulated(info),
        "n_channels": len(raw.ch_names),
        "channel_types": dict(Counter(raw.get_channel_types())),
        "sfreq_hz": sfreq,
        "n_samples": int(raw.n_times),
        "duration_s": raw.n_times / sfreq,
        "meas_date": None if info["meas_date"] is None else info["meas_date"].isoformat(),
        "highpass_hz": float(info["highpass"]),
        "lowpass_hz": float(info["lowpass"]),
        "bads": list(info["bads"]),
        "annotations": dict(Counter(raw.annotations.description.tolist())),
        "events": _stim_events(raw),
        "description": description,
    }


def _stim_events(raw: Any) -> dict[str, int] | None:
    """Counts of event values on the stim channels, or None without stim channels."""
    import mne

    picks = mne.pick_types(raw.info, meg=False, stim=True, exclude=())
    if not len(picks):
        return None
    try:
        events = mne.find_events(
            raw,
            stim_channel=[raw.ch_names[p] for p in picks],
            shortest_event=1,
            consecutive=True,
            verbose="error",
        )
    except ValueError as exc:
        logger.warning("Could not read stim-channel events: %s", exc)
        return None
    return {str(k): int(v) for k, v in sorted(Counter(events[:, 2].tolist()).items())}


def _grouped(annotations: dict[str, int]) -> list[str]:
    """Annotation lines grouped by the text before '/' (e.g. class, image)."""
    groups: dict[str, dict[str, int]] = {}
    for text, n in annotations.items():
        head = text.split("/", 1)[0] if "/" in text else text
        groups.setdefault(head, {})[text] = n
    lines = []
    for head, members in groups.items():
        total = sum(members.values())
        if len(members) == 1:
            lines.append(f"  {next(iter(members))}: {total}")
            continue
        shown = sorted(members.items(), key=lambda kv: (-kv[1], kv[0]))[:_MAX_LISTED]
        more = len(members) - len(shown)
        listed = ", ".join(f"{t} {n}" for t, n in shown) + (f", ... {more} more" if more else "")
        lines.append(f"  {head}/*: {total} in {len(members)} kinds ({listed})")
    return lines


def _run(args: argparse.Namespace) -> int:
    try:
        summary = describe(args.file)
    except ValueError as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(summary))
        return EXIT_OK
    s = summary
    types = ", ".join(f"{n} {t}" for t, n in s["channel_types"].items())
    lines = [
        f"File:        {s['file']} ({s['reader']})",
        "Simulated:   "
        + (
            f"YES (description says {SIMULATED_TAG})"
            if s["simulated"]
            else f"no {SIMULATED_TAG} tag"
        ),
        f"Channels:    {s['n_channels']} ({types})",
        f"Rate:        {s['sfreq_hz']:g} Hz (filters {s['highpass_hz']:g}-{s['lowpass_hz']:g} Hz)",
        f"Duration:    {s['duration_s']:.3f} s ({s['n_samples']} samples)",
        f"Recorded:    {s['meas_date'] or 'unknown'}",
        f"Bad:         {', '.join(s['bads']) if s['bads'] else 'none'}",
        f"Annotations: {sum(s['annotations'].values())}",
        *_grouped(s["annotations"]),
    ]
    if s["events"] is None:
        lines.append("Events:      no stim channel")
    else:
        n_events = sum(s["events"].values())
        values = ", ".join(f"{k}: {n}" for k, n in s["events"].items())
        lines.append(f"Events:      {n_events}" + (f" ({values})" if values else ""))
    if s["description"]:
        lines.append(f"Description: {s['description']}")
    print("\n".join(lines))
    return EXIT_OK
