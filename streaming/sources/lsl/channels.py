"""LSL channel descriptions, read into an MNE ``Info`` and written from one.

The outlet's ``desc/channels/channel`` entries give ``label``, ``type`` (an MNE channel type
such as ``eeg``, ``mag``, ``grad``, ``stim``, or the XDF names ``EEG``, ``MEG``, ...),
``unit`` (``V``, ``microvolts``, ``uV``, ``fT``, ``fT/cm``, ..., or a power of ten such as
``-6`` meaning 1e-6 of the SI unit) and ``location`` (``X``, ``Y``, ``Z`` in millimetres).
Samples are scaled to SI units (volts, tesla, tesla/metre). Without labels the channels are
named ``ch1``, ``ch2``, ...; without types, the stream's type decides (``EEG`` streams hold
EEG channels) or ``misc``; without units, the values are taken to be SI already. An outlet
whose ``desc/simulated`` is ``true`` is labelled simulated.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import mne
import numpy as np
import pylsl
from mne.io.constants import FIFF

from neurocast.streaming.sources.base import StreamInfo

logger = logging.getLogger(__name__)

_MNE_TYPES = frozenset(mne.io.get_channel_type_constants())
_TYPE_ALIASES = {
    "trigger": "stim",
    "trig": "stim",
    "markers": "stim",
    "events": "stim",
    "exg": "misc",
    "aux": "misc",
    "ref": "ref_meg",
}
# scale factor from a unit to its SI unit (volts, tesla, tesla/metre)
_UNIT_SCALE = {
    "": 1.0,
    "none": 1.0,
    "v": 1.0,
    "volt": 1.0,
    "volts": 1.0,
    "mv": 1e-3,
    "millivolt": 1e-3,
    "millivolts": 1e-3,
    "uv": 1e-6,
    "µv": 1e-6,
    "μv": 1e-6,
    "microvolt": 1e-6,
    "microvolts": 1e-6,
    "nv": 1e-9,
    "nanovolt": 1e-9,
    "nanovolts": 1e-9,
    "t": 1.0,
    "tesla": 1.0,
    "pt": 1e-12,
    "picotesla": 1e-12,
    "ft": 1e-15,
    "femtotesla": 1e-15,
    "t/m": 1.0,
    "pt/m": 1e-12,
    "ft/m": 1e-15,
    "ft/cm": 1e-13,
}


@dataclass(frozen=True)
class ChannelDesc:
    """One channel as an LSL outlet describes it.

    Attributes
    ----------
    name : str
        Channel label.
    ch_type : str
        MNE channel type (``"eeg"``, ``"mag"``, ``"grad"``, ``"stim"``, ``"misc"``, ...).
    scale : float
        Factor from the transmitted unit to SI (volts, tesla, tesla/metre).
    location_m : tuple of float | None
        Sensor position in metres, when the outlet gives one.
    """

    name: str
    ch_type: str
    scale: float = 1.0
    location_m: tuple[float, float, float] | None = None


def _mne_type(lsl_type: str, unit: str) -> str | None:
    t = lsl_type.strip().lower()
    if t == "meg":  # XDF's generic MEG type: the unit tells gradiometers from magnetometers
        return "grad" if "/" in unit else "mag"
    t = _TYPE_ALIASES.get(t, t)
    return t if t in _MNE_TYPES else None


def _unit_scale(unit: str) -> float | None:
    u = unit.strip()
    try:
        return 10.0 ** int(u)  # MNE-LSL convention: a power of ten of the SI unit
    except ValueError:
        return _UNIT_SCALE.get(u.lower())


def describe_channels(xml: str) -> tuple[list[ChannelDesc], bool]:
    """Read the channels of an LSL stream from its full XML description.

    Parameters
    ----------
    xml : str
        ``pylsl.StreamInfo.as_xml()`` of the full info (as returned by ``StreamInlet.info()``).

    Returns
    -------
    channels : list of ChannelDesc
        One per channel, in data order, with the defaults of the module docstring filled in.
    simulated : bool
        True when the description says ``<simulated>true</simulated>``.
    """
    root = ET.fromstring(xml)
    n = int(root.findtext("channel_count", "0"))
    stream_type = root.findtext("type", "")
    entries = root.findall("desc/channels/channel")
    if entries and len(entries) != n:
        logger.warning(
            "Stream %r describes %d channels but sends %d; its channel descriptions are ignored.",
            root.findtext("name"),
            len(entries),
            n,
        )
        entries = []
    unknown: set[str] = set()
    out: list[ChannelDesc] = []
    for k in range(n):
        e = entries[k] if entries else None
        label = (e.findtext("label") or "").strip() if e is not None else ""
        unit = (e.findtext("unit") or "").strip() if e is not None else ""
        declared = (e.findtext("type") or "").strip() if e is not None else ""
        ch_type = _mne_type(declared or stream_type, unit) or "misc"
        scale = _unit_scale(unit)
        if scale is None:
            unknown.add(unit)
            scale = 1.0
        out.append(ChannelDesc(label or f"ch{k + 1}", ch_type, scale, _location(e)))
    if unknown:
        logger.warning(
            "Stream %r uses units %s that neurocast does not know; those channels are taken "
            "to be in SI units already.",
            root.findtext("name"),
            sorted(unknown),
        )
    simulated = root.findtext("desc/simulated", "").strip().lower() in ("true", "1", "yes")
    return out, simulated


def _location(e: ET.Element | None) -> tuple[float, float, float] | None:
    if e is None or e.find("location") is None:
        return None
    try:
        x, y, z = (float(e.findtext(f"location/{a}") or "nan") / 1e3 for a in "XYZ")
    except ValueError:
        return None
    return (x, y, z) if np.isfinite([x, y, z]).all() else None


def build_info(channels: list[ChannelDesc], sfreq: float) -> mne.Info:
    """An MNE ``Info`` of ``channels`` at ``sfreq`` Hz; repeated names get ``-2``, ``-3``, ...
    and known locations become sensor positions."""
    names: list[str] = []
    seen: set[str] = set()
    for ch in channels:
        name, k = ch.name, 1
        while name in seen:  # two devices may both call a channel "Fz"
            k += 1
            name = f"{ch.name}-{k}"
        seen.add(name)
        names.append(name)
    info = mne.create_info(names, sfreq, [ch.ch_type for ch in channels], verbose="error")
    with info._unlock():
        for ch, desc in zip(info["chs"], channels, strict=True):
            if desc.location_m is not None:
                ch["loc"][:3] = desc.location_m
    return info


def _unit(ch: dict) -> str:
    return {FIFF.FIFF_UNIT_V: "V", FIFF.FIFF_UNIT_T: "T", FIFF.FIFF_UNIT_T_M: "T/m"}.get(
        int(ch["unit"]), "none"
    )


def lsl_stream_info(stream: StreamInfo, name: str, source_id: str) -> pylsl.StreamInfo:
    """An LSL description of a stream: channel labels, MNE types, SI units and positions.

    Positions go to ``channel/location`` in millimetres (the XDF convention) when known; a
    simulated stream says ``<simulated>true</simulated>``. :func:`describe_channels`
    reads all of it back.
    """
    info = stream.info
    has_meg = any(t in ("mag", "grad") for t in info.get_channel_types())
    out = pylsl.StreamInfo(
        name,
        "MEG" if has_meg else "EEG",
        len(info["ch_names"]),
        info["sfreq"],
        "float32",
        source_id,
    )
    channels = out.desc().append_child("channels")
    for ch, ch_type in zip(info["chs"], info.get_channel_types(), strict=True):
        c = channels.append_child("channel")
        c.append_child_value("label", ch["ch_name"])
        c.append_child_value("type", ch_type)
        c.append_child_value("unit", _unit(ch))
        pos = np.asarray(ch["loc"][:3], dtype=float)
        if np.isfinite(pos).all() and pos.any():
            loc = c.append_child("location")
            for axis, v in zip("XYZ", pos * 1e3, strict=True):
                loc.append_child_value(axis, f"{v:.6g}")
    if stream.simulated:
        out.desc().append_child_value("simulated", "true")
    out.desc().append_child("acquisition").append_child_value("manufacturer", "neurocast replay")
    return out
