"""Results and loop counters as plain data, to cross process boundaries between Ray workers.

Plain data keeps the actor's reply independent of the classes' pickled layout (a gateway and
its actors may run different patch versions); numpy arrays inside payloads stay arrays, which
Ray serialises without copying. This module does not import Ray.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from neurocast.streaming.engine.loop import LoopStats
from neurocast.streaming.engine.results import Latency, Result
from neurocast.streaming.sources.base import Marker


def result_to_plain(result: Result) -> dict[str, Any]:
    """A result as a dict of builtins (and payload arrays)."""
    return {
        "kind": result.kind,
        "model": result.model,
        "window_end": int(result.window_end),
        "t_window_end": float(result.t_window_end),
        "payload": result.payload,
        "valid": bool(result.valid),
        "issues": list(result.issues),
        "skipped": int(result.skipped),
        "simulated": bool(result.simulated),
        "latency": asdict(result.latency),
        "markers": [(m.timestamp, m.value) for m in result.markers],
        "ready_time": float(result.ready_time),
        "clock_offset": float(result.clock_offset),
    }


def result_from_plain(record: dict[str, Any], clock_shift_s: float = 0.0) -> Result:
    """The result a :func:`result_to_plain` record describes.

    Parameters
    ----------
    record : dict
        From :func:`result_to_plain`.
    clock_shift_s : float
        Add to the producer's local clock to get the consumer's, in seconds (0 on one
        machine). Applied to ``ready_time`` and ``clock_offset`` so that delivery latency and
        the source-to-local mapping stay right on the consumer's side.
    """
    return Result(
        kind=record["kind"],
        model=record["model"],
        window_end=record["window_end"],
        t_window_end=record["t_window_end"],
        payload=record["payload"],
        valid=record["valid"],
        issues=list(record["issues"]),
        skipped=record["skipped"],
        simulated=record["simulated"],
        latency=Latency(**record["latency"]),
        markers=[Marker(t, v) for t, v in record["markers"]],
        ready_time=record["ready_time"] + clock_shift_s,
        clock_offset=record["clock_offset"] + clock_shift_s,
    )


def stats_to_plain(stats: LoopStats) -> dict[str, Any]:
    """Loop counters as a dict of builtins."""
    return asdict(stats)


def stats_from_plain(record: dict[str, Any]) -> LoopStats:
    """The :class:`LoopStats` a :func:`stats_to_plain` record describes."""
    return LoopStats(**record)
