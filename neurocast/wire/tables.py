"""Decoded results written as JSON, NPZ or Parquet (batch jobs and ``neurocast decode``).

Payloads are flattened into named fields: a list of records such as the retrieval ``topk``
becomes ``topk.image_id``, ``topk.label`` and ``topk.score``. In NPZ every array is named
``{model}/{field}``, one row per window (``{model}/window_end`` is the key shared with live
decoding); string fields that never change (class names, channel names) are stored once. In
Parquet there is one row per model and window; arrays of more than one dimension are stored
flattened with their shape in ``{field}.shape``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from neurocast.streaming.engine.results import Result
from neurocast.wire.records import dumps, result_record

FORMATS = ("json", "npz", "parquet")
#: The media type of each format, as the service labels its responses.
MEDIA_TYPES = {
    "json": "application/json",
    "npz": "application/x-npz",
    "parquet": "application/vnd.apache.parquet",
}


def flatten_payload(payload: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested records of a payload into ``parent.child`` fields."""
    out: dict[str, Any] = {}
    for key, value in payload.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_payload(value, f"{name}."))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for field in value[0]:
                out[f"{name}.{field}"] = [v.get(field) for v in value]
        else:
            out[name] = value
    return out


def _is_text(value: Any) -> bool:
    if isinstance(value, str):
        return True
    if isinstance(value, list | tuple):
        return bool(value) and all(isinstance(v, str) for v in value)
    return isinstance(value, np.ndarray) and value.dtype.kind in "US"


def _by_model(results: Sequence[Result]) -> dict[str, list[Result]]:
    groups: dict[str, list[Result]] = {}
    for r in results:
        groups.setdefault(r.model, []).append(r)
    return groups


def to_json(results: Sequence[Result], job_id: str, simulated: bool) -> str:
    """Results as the JSON of :class:`~neurocast.wire.schemas.JobResults`."""
    body = {
        "job_id": job_id,
        "simulated": simulated,
        "results": [result_record(r) for r in results],
    }
    return dumps(body)


def to_npz(results: Sequence[Result], simulated: bool) -> bytes:
    """Results as an uncompressed NPZ archive (see the module docstring for the names)."""
    arrays: dict[str, np.ndarray] = {"simulated": np.asarray(simulated)}
    groups = _by_model(results)
    arrays["models"] = np.asarray(list(groups), dtype=str)
    for model, rows in groups.items():
        arrays[f"{model}/kind"] = np.asarray(rows[0].kind)
        arrays[f"{model}/window_end"] = np.asarray([r.window_end for r in rows], dtype=np.int64)
        arrays[f"{model}/t_window_end"] = np.asarray([r.t_window_end for r in rows])
        arrays[f"{model}/valid"] = np.asarray([r.valid for r in rows], dtype=bool)
        arrays[f"{model}/skipped"] = np.asarray([r.skipped for r in rows], dtype=np.int64)
        flat = [flatten_payload(r.payload) for r in rows]
        for field in flat[0]:
            values = [f.get(field) for f in flat]
            if _is_text(values[0]) and all(_same(v, values[0]) for v in values):
                arrays[f"{model}/{field}"] = np.asarray(values[0], dtype=str)
            else:
                arrays[f"{model}/{field}"] = np.asarray(values)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(a, b))
    return bool(a == b)


def to_parquet(results: Sequence[Result], simulated: bool) -> bytes:
    """Results as a Parquet table, one row per model and window."""
    rows: list[dict[str, Any]] = []
    for r in results:
        row: dict[str, Any] = {
            "model": r.model,
            "kind": r.kind,
            "window_end": int(r.window_end),
            "t_window_end": float(r.t_window_end),
            "valid": bool(r.valid),
            "issues": list(r.issues),
            "skipped": int(r.skipped),
            "simulated": bool(r.simulated),
            "acquisition_ms": r.latency.acquisition_ms,
            "preprocessing_ms": r.latency.preprocessing_ms,
            "inference_ms": r.latency.inference_ms,
        }
        for field, value in flatten_payload(r.payload).items():
            if isinstance(value, np.ndarray) and value.ndim > 1:
                row[f"{field}.shape"] = list(value.shape)
                value = value.ravel()
            row[field] = value.tolist() if isinstance(value, np.ndarray) else value
        rows.append(row)
    names: dict[str, None] = {}  # every field of every model, in first-seen order
    for row in rows:
        names.update(dict.fromkeys(row))
    if rows:
        table = pa.table({n: [row.get(n) for row in rows] for n in names})
    else:
        table = pa.table({"model": pa.array([], pa.string())})
    table = table.replace_schema_metadata({"neurocast": json.dumps({"simulated": simulated})})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def to_bytes(fmt: str, results: Sequence[Result], simulated: bool, job_id: str = "") -> bytes:
    """Results encoded in ``fmt`` (``json``, ``npz`` or ``parquet``).

    Raises
    ------
    ValueError
        If ``fmt`` is none of these.
    """
    if fmt == "json":
        return to_json(results, job_id, simulated).encode()
    if fmt == "npz":
        return to_npz(results, simulated)
    if fmt == "parquet":
        return to_parquet(results, simulated)
    raise ValueError(f"Unknown results format {fmt!r}; use one of {', '.join(FORMATS)}.")


def write_results(
    results: Sequence[Result], path: Path, *, simulated: bool, job_id: str = ""
) -> None:
    """Write results to ``path`` in the format its suffix names (.json, .npz or .parquet).

    Raises
    ------
    ValueError
        If the suffix is none of these.
    """
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(
            f"Cannot tell the output format from {path.name!r}: use a .parquet, .npz or .json "
            f"file name."
        )
    path.write_bytes(to_bytes(fmt, results, simulated, job_id))
