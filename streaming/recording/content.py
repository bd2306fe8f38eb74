"""What a recording holds of a stream's channels and of a decoded result (XDF terms)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from mne.io.constants import FIFF

from neurocast.streaming.engine.results import Result
from neurocast.streaming.recording.xdf import ChannelMeta

# MNE unit codes and channel types to the unit labels XDF files carry
UNITS = {FIFF.FIFF_UNIT_V: "V", FIFF.FIFF_UNIT_T: "T", FIFF.FIFF_UNIT_T_M: "T/m"}
TYPE_UNITS = {"eeg": "V", "eog": "V", "ecg": "V", "emg": "V", "mag": "T", "grad": "T/m"}
# the XDF stream type of each result kind
OUTPUT_TYPES = {
    "probabilities": "Probabilities",
    "retrieval": "Retrieval",
    "embedding": "Embedding",
    "translation": "Translation",
}


def channel_meta(ch: dict[str, Any], ch_type: str) -> ChannelMeta:
    """A channel of an MNE ``Info`` as XDF metadata (position in millimetres; coil and full
    ``loc`` kept so that the ``Info`` can be rebuilt)."""
    loc = np.asarray(ch["loc"], dtype=float)
    pos = loc[:3]
    location: tuple[float, float, float] | None = None
    if np.isfinite(pos).all() and pos.any():
        location = (float(pos[0]) * 1e3, float(pos[1]) * 1e3, float(pos[2]) * 1e3)
    extra = {
        "coil_type": str(int(ch["coil_type"])),
        "loc": " ".join(repr(float(v)) for v in loc),
    }
    return ChannelMeta(
        label=str(ch["ch_name"]),
        type=ch_type,
        unit=UNITS.get(int(ch["unit"]), "none"),
        location_mm=location,
        extra=extra,
    )


def prepare_result(result: Result) -> dict[str, Any] | None:
    """What the writer needs of a result, copied out of its payload (caller's thread)."""
    p = result.payload
    t = float(result.t_window_end)
    desc: dict[str, object] = {"simulated": "true"} if result.simulated else {}
    base: dict[str, Any] = {
        "model": result.model,
        "kind": result.kind,
        "clock_offset": float(result.clock_offset),
        "srate": 0.0,
        "desc": desc,
    }
    if result.kind == "probabilities":
        probs = np.asarray(p["probabilities"], dtype=np.float32).reshape(1, -1)
        classes = [str(c) for c in p.get("classes") or ()]
        if len(classes) != probs.shape[1]:
            classes = [f"class{k}" for k in range(probs.shape[1])]
        return {
            **base,
            "fmt": "float32",
            "n_channels": probs.shape[1],
            "channels": [ChannelMeta(c, "probability", "none") for c in classes],
            "timestamps": np.array([t]),
            "values": probs,
        }
    if result.kind == "embedding":
        emb = np.asarray(p["embedding"], dtype=np.float32).reshape(1, -1)
        return {
            **base,
            "fmt": "float32",
            "n_channels": emb.shape[1],
            "channels": [ChannelMeta(f"e{k}", "embedding", "none") for k in range(emb.shape[1])],
            "timestamps": np.array([t]),
            "values": emb,
        }
    if result.kind == "retrieval":
        body: dict[str, Any] = {"gallery": p.get("gallery")}
        if p.get("topk") is not None:
            body["topk"] = [
                {k: hit.get(k) for k in ("image_id", "label", "score")} for hit in p["topk"]
            ]
        else:
            body["embedding"] = np.asarray(p["embedding"], dtype=np.float32).tolist()
        return {
            **base,
            "fmt": "string",
            "n_channels": 1,
            "channels": [ChannelMeta("topk", "retrieval", "json")],
            "timestamps": np.array([t]),
            "values": [[json.dumps(body, separators=(",", ":"))]],
        }
    if result.kind == "translation":
        signal = np.array(p["signal"], dtype=np.float32, copy=True)  # (channels, samples)
        sfreq = float(p.get("sfreq_hz") or 0.0)
        if signal.ndim != 2 or sfreq <= 0:
            return None
        n_ch, n = signal.shape
        names = [str(c) for c in p.get("ch_names") or ()]
        types = [str(c) for c in p.get("ch_types") or ()]
        if len(names) != n_ch:
            names = [f"ch{k + 1}" for k in range(n_ch)]
        if len(types) != n_ch:
            types = ["misc"] * n_ch
        return {
            **base,
            "srate": sfreq,
            "fmt": "float32",
            "n_channels": n_ch,
            "channels": [
                ChannelMeta(c, ty, TYPE_UNITS.get(ty, "none"))
                for c, ty in zip(names, types, strict=True)
            ],
            "timestamps": t - (n - 1 - np.arange(n)) / sfreq,
            "values": signal.T,
        }
    return None
