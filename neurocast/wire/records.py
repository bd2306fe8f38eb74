"""Results as JSON-ready records (WebSocket messages and batch results share the layout)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import fields
from typing import Any

import numpy as np

from neurocast.streaming.engine.results import Latency, Result
from neurocast.streaming.sources.base import Marker

# Latency holds floats only: reading its fields by name gives what dataclasses.asdict gives,
# without asdict's recursive deep copy (most of the cost of a record)
_LATENCY_FIELDS = tuple(f.name for f in fields(Latency))


def jsonable(value: Any) -> Any:
    """Convert numpy arrays and scalars inside ``value`` to plain Python for JSON."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def marker_records(markers: Iterable[Marker]) -> list[dict[str, Any]]:
    """Markers as :class:`~neurocast.wire.schemas.EventModel` fields."""
    return [{"timestamp": m.timestamp, "value": m.value} for m in markers]


def result_record(result: Result) -> dict[str, Any]:
    """The :class:`~neurocast.wire.schemas.ResultRecord` fields of a result, JSON-ready."""
    return {
        "kind": result.kind,
        "model": result.model,
        "window_end": int(result.window_end),
        "t_window_end": float(result.t_window_end),
        "valid": bool(result.valid),
        "issues": list(result.issues),
        "skipped": int(result.skipped),
        "simulated": bool(result.simulated),
        "latency": {name: getattr(result.latency, name) for name in _LATENCY_FIELDS},
        "markers": marker_records(result.markers),
        "payload": jsonable(result.payload),
    }


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def dumps(record: dict[str, Any]) -> str:
    """Compact JSON; NaN and infinities (which JSON cannot carry) become null."""
    try:
        return json.dumps(record, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return json.dumps(_finite_or_none(record), separators=(",", ":"), allow_nan=False)


def result_message_json(result: Result, session_id: str) -> str:
    """A :class:`~neurocast.wire.schemas.ResultMessage` as compact JSON text."""
    record = result_record(result)
    record["type"] = "result"
    record["session_id"] = session_id
    record["ready_time"] = result.ready_time
    return dumps(record)
