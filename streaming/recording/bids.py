"""XDF recordings as MNE ``Raw`` objects, and their export to a BIDS dataset with mne-bids.

Each raw stream (a numeric stream with a nominal rate that is not a model output) becomes a
``Raw`` in SI units with its channels' names, types and positions (for files written by
:mod:`neurocast.streaming.recording.recorder` also MNE's coil types and full ``loc`` vectors
and the device-to-head transform, so MEG comes back complete). Marker streams become
annotations of the raw stream they belong to (``<name>-markers``; any other marker stream
goes with the first raw stream), placed at the sample nearest in time. Streams are put on the
recording machine's clock with their ClockOffset chunks first (pyxdf's clock
synchronisation), so markers and data from different devices line up.

:func:`export_bids` writes MEG (with any EEG recorded alongside) as FIF and EEG as EDF, the
events as ``events.tsv`` and each model's outputs as a derivatives TSV
(``derivatives/neurocast/sub-*/<datatype>/*_desc-<model><kind>_decoding.tsv``, with a JSON
sidecar) whose ``onset`` column is in seconds from the start of the raw recording, like
``events.tsv``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mne
import numpy as np
from mne_bids import BIDSPath, write_raw_bids
from numpy.typing import NDArray

from neurocast.streaming.recording.read import XDFScan, load_xdf
from neurocast.streaming.sources.lsl.channels import build_info, describe_channels

logger = logging.getLogger(__name__)

#: Stream types of model outputs (see the recorder); never taken for raw data.
OUTPUT_TYPES = frozenset({"probabilities", "retrieval", "embedding", "translation"})


@dataclass
class XDFContents:
    """What an XDF file holds, ready for MNE and BIDS.

    Attributes
    ----------
    raws : list of (str, mne.io.RawArray)
        Stream name and its data, annotated with its markers.
    outputs : list of dict
        pyxdf's streams of model outputs (``info`` and ``desc`` say model and kind).
    first_times : list of float
        Time of each raw's first sample on the common clock, in seconds.
    scan : XDFScan
        Where the file's complete chunks end.
    n_markers_outside : int
        Markers that fell outside every raw recording and were left out.
    """

    raws: list[tuple[str, mne.io.RawArray]]
    outputs: list[dict[str, Any]]
    first_times: list[float]
    scan: XDFScan
    n_markers_outside: int = 0
    meas_date: dt.datetime | None = field(default=None)


def _text(stream: dict[str, Any], key: str, default: str = "") -> str:
    value = stream["info"].get(key)
    if isinstance(value, list) and value and isinstance(value[0], str):
        return value[0]
    return default


def _kind(stream: dict[str, Any]) -> str:
    fmt = _text(stream, "channel_format")
    stype = _text(stream, "type").lower()
    srate = float(_text(stream, "nominal_srate", "0") or 0)
    if stype in OUTPUT_TYPES or _text(stream, "source_id").startswith("neurocast-model:"):
        return "output"
    if fmt == "string" or stype == "markers":
        return "markers"
    return "raw" if srate > 0 else "other"


def _mne_extras(xml: str, info: mne.Info) -> None:
    """Apply what the recorder keeps beyond LSL's conventions: coil types, ``loc``, device
    to head transform, description."""
    root = ET.fromstring(xml)
    entries = root.findall("desc/channels/channel")
    with info._unlock():
        if len(entries) == len(info["chs"]):
            for ch, e in zip(info["chs"], entries, strict=True):
                coil = e.findtext("coil_type")
                loc = e.findtext("loc")
                if coil is not None and coil.strip().lstrip("-").isdigit():
                    ch["coil_type"] = int(coil)
                if loc:
                    values = np.array([float(v) for v in loc.split()])
                    if values.size == 12:
                        ch["loc"][:] = values
        trans = root.findtext("desc/dev_head_t")
        if trans:
            m = np.array([float(v) for v in trans.split()])
            if m.size == 16:
                info["dev_head_t"] = mne.transforms.Transform("meg", "head", m.reshape(4, 4))
        description = root.findtext("desc/description")
        if description:
            info["description"] = description


def _raw_from_stream(stream: dict[str, Any], xml: str) -> tuple[mne.io.RawArray, NDArray]:
    channels, simulated = describe_channels(xml)
    sfreq = float(_text(stream, "nominal_srate"))
    info = build_info(channels, sfreq)
    _mne_extras(xml, info)
    if simulated and not str(info.get("description") or "").startswith("SIMULATED"):
        with info._unlock():
            info["description"] = "SIMULATED " + str(info.get("description") or "")
    scale = np.array([c.scale for c in channels], dtype=np.float64)
    data = np.asarray(stream["time_series"], dtype=np.float64).T * scale[:, None]
    raw = mne.io.RawArray(data, info, verbose="error")
    return raw, np.asarray(stream["time_stamps"], dtype=np.float64)


def read_xdf_contents(path: str | Path) -> XDFContents:
    """Read an XDF file (up to its last complete chunk) into annotated MNE ``Raw`` objects.

    Parameters
    ----------
    path : str | Path
        The XDF file.

    Returns
    -------
    contents : XDFContents
        The raw streams, the model outputs and where the file was cut, if it was.

    Raises
    ------
    XDFFormatError
        If the file is not XDF.
    ValueError
        If the file holds no raw stream with samples.
    """
    streams, header, scan = load_xdf(
        path, synchronize_clocks=True, dejitter_timestamps=False, verbose=False
    )
    raws: list[tuple[str, mne.io.RawArray]] = []
    stamps: list[NDArray] = []
    markers: list[dict[str, Any]] = []
    outputs: list[dict[str, Any]] = []
    for s in streams:
        kind = _kind(s)
        sid = int(s["info"]["stream_id"])
        if kind == "raw" and len(s["time_stamps"]):
            raw, ts = _raw_from_stream(s, scan.headers[sid])
            raws.append((_text(s, "name"), raw))
            stamps.append(ts)
        elif kind == "markers":
            markers.append(s)
        elif kind == "output":
            outputs.append(s)
    if not raws:
        raise ValueError(f"{path} holds no raw stream with samples.")
    meas_date = _meas_date(header)
    names = [n for n, _ in raws]
    per_raw: list[tuple[list[float], list[str]]] = [([], []) for _ in raws]
    outside = 0
    for m in markers:
        name = _text(m, "name")
        base = name[: -len("-markers")] if name.endswith("-markers") else None
        k = names.index(base) if base in names else 0
        ts = stamps[k]
        sfreq = raws[k][1].info["sfreq"]
        for t, value in zip(m["time_stamps"], m["time_series"], strict=True):
            if not ts[0] - 0.5 / sfreq <= t <= ts[-1] + 0.5 / sfreq:
                outside += 1
                continue
            # the sample nearest in time: right across gaps in the data too
            i = int(np.clip(np.searchsorted(ts, t), 1, len(ts) - 1))
            i = i - 1 if t - ts[i - 1] <= ts[i] - t else i
            per_raw[k][0].append(i / sfreq)
            # BIDS tables are tab-separated: a tab or newline in a marker would break a row
            per_raw[k][1].append(re.sub(r"[\t\r\n]", " ", str(value[0])))
    for (_, raw), (onsets, descriptions) in zip(raws, per_raw, strict=True):
        if meas_date is not None:
            raw.set_meas_date(meas_date)
        if onsets:
            raw.set_annotations(
                mne.Annotations(onsets, 0.0, descriptions, orig_time=raw.info["meas_date"])
            )
    if outside:
        logger.warning("%d markers fall outside the recorded data and are left out.", outside)
    return XDFContents(
        raws, outputs, [float(ts[0]) for ts in stamps], scan, outside, meas_date=meas_date
    )


def _meas_date(header: dict[str, Any] | None) -> dt.datetime | None:
    try:
        text = header["info"]["datetime"][0] if header else None
        stamp = dt.datetime.fromisoformat(text) if text else None
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    if stamp is None:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.astimezone(dt.UTC)


def _label(text: str) -> str:
    """A BIDS label: letters and digits only."""
    return re.sub(r"[^A-Za-z0-9]", "", text) or "x"


@dataclass
class BIDSExport:
    """What :func:`export_bids` wrote.

    Attributes
    ----------
    raw_paths : list of BIDSPath
        One per raw stream.
    derivative_files : list of Path
        The derivatives TSV files (one per model output stream).
    scan : XDFScan
        Where the source file's complete chunks end (``scan.truncated``: it was cut short).
    """

    raw_paths: list[BIDSPath]
    derivative_files: list[Path]
    scan: XDFScan


def export_bids(
    xdf_path: str | Path,
    bids_root: str | Path,
    subject: str,
    task: str,
    *,
    session: str | None = None,
    overwrite: bool = False,
) -> BIDSExport:
    """Write an XDF recording as a BIDS dataset.

    Parameters
    ----------
    xdf_path : str | Path
        The recording (a truncated file is used up to its last complete chunk).
    bids_root : str | Path
        The dataset folder (created if needed).
    subject, task : str
        BIDS labels (letters and digits).
    session : str | None
        BIDS session label.
    overwrite : bool
        Replace existing files of the same subject, session and task.

    Returns
    -------
    export : BIDSExport
        The files written.
    """
    contents = read_xdf_contents(xdf_path)
    bids_root = Path(bids_root)
    several = len(contents.raws) > 1
    written: list[BIDSPath] = []
    datatypes: list[str] = []
    for k, (_, raw) in enumerate(contents.raws):
        types = set(raw.get_channel_types())
        datatype = "meg" if types & {"mag", "grad"} else "eeg"
        fmt = "FIF" if datatype == "meg" else "EDF"
        path = BIDSPath(
            subject=subject,
            session=session,
            task=task,
            run=k + 1 if several else None,
            datatype=datatype,
            root=bids_root,
        )
        write_raw_bids(
            raw,
            path,
            format=fmt,
            allow_preload=True,
            overwrite=overwrite,
            verbose="error",
        )
        written.append(path)
        datatypes.append(datatype)
    derivative_files = _write_derivatives(contents, bids_root, subject, session, task, datatypes)
    return BIDSExport(written, derivative_files, contents.scan)


def _write_derivatives(
    contents: XDFContents,
    bids_root: Path,
    subject: str,
    session: str | None,
    task: str,
    datatypes: list[str],
) -> list[Path]:
    if not contents.outputs:
        return []
    root = bids_root / "derivatives" / "neurocast"
    root.mkdir(parents=True, exist_ok=True)
    description = root / "dataset_description.json"
    if not description.exists():
        description.write_text(
            json.dumps(
                {
                    "Name": "neurocast decoded outputs",
                    "BIDSVersion": "1.9.0",
                    "DatasetType": "derivative",
                    "GeneratedBy": [{"Name": "neurocast"}],
                },
                indent=2,
            )
        )
    t0 = contents.first_times[0]
    files: list[Path] = []
    for s in contents.outputs:
        desc = (s["info"].get("desc") or [None])[0] or {}
        model = (desc.get("model") or [_text(s, "name")])[0]
        kind = (desc.get("kind") or [_text(s, "type").lower()])[0]
        folder = root / f"sub-{subject}"
        if session:
            folder = folder / f"ses-{session}"
        folder = folder / datatypes[0]
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"sub-{subject}" + (f"_ses-{session}" if session else "") + f"_task-{task}"
        stem += f"_desc-{_label(model)}{_label(kind)}_decoding"
        labels = _channel_labels(s)
        ts = np.asarray(s["time_stamps"], dtype=np.float64)
        lines = ["\t".join(["onset", "timestamp", *labels])]
        series = s["time_series"]
        for i, t in enumerate(ts):
            row = series[i]
            if _text(s, "channel_format") == "string":
                cells = [str(v).replace("\t", " ").replace("\n", " ") for v in row]
            else:
                cells = [repr(float(v)) for v in row]
            lines.append("\t".join([f"{t - t0:.6f}", repr(float(t)), *cells]))
        tsv = folder / f"{stem}.tsv"
        tsv.write_text("\n".join(lines) + "\n")
        sidecar = {
            "Description": f"Outputs of model {model!r} ({kind}) decoded live by neurocast.",
            "onset": {"Description": "Window end, seconds from the start of the recording."},
            "timestamp": {"Description": "Window end on the source clock.", "Units": "s"},
            "Model": model,
            "Kind": kind,
            "Simulated": bool(desc.get("simulated")),
        }
        tsv.with_suffix(".json").write_text(json.dumps(sidecar, indent=2))
        files.append(tsv)
    return files


def _channel_labels(stream: dict[str, Any]) -> list[str]:
    n = int(_text(stream, "channel_count", "1"))
    try:
        chans = stream["info"]["desc"][0]["channels"][0]["channel"]
        labels = [c["label"][0] for c in chans]
    except (KeyError, IndexError, TypeError):
        labels = []
    if len(labels) != n:
        labels = [f"value{k + 1}" for k in range(n)]
    return [_label(x) if x else f"value{k + 1}" for k, x in enumerate(labels)]
