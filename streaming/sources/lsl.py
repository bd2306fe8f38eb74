"""Lab Streaming Layer inlets as a neurocast source.

:class:`LSLSource` resolves an LSL outlet by name, type or source id, describes it as an MNE
``Info`` (from the channel labels, types, units and locations in the outlet's XML description)
and pulls its samples in chunks. One source can also merge several outlets of the same
sampling rate (e.g. MEG and EEG from two devices) into one stream on a common LSL timeline,
and attach the events of an LSL marker stream.

Time stamps
-----------
Every chunk keeps the outlet's own LSL time stamps, unchanged, and the offset that maps them
onto this machine's clock (``Chunk.clock_offset``, LSL's ``time_correction()``), plus the
local time of receipt. No LSL post-processing flag is set, deliberately:

- ``proc_clocksync`` would add the offset into the time stamps; we keep the offset separate
  so a re-estimated offset never bends the spacing of the samples themselves (which the ring
  buffer checks for gaps), and so the time stamps are exactly what the outlet sent.
- ``proc_dejitter`` fits a regression line through the time stamps: it hides real gaps and
  clock jumps, which the ring buffer must see to flag the windows they fall in.
- ``proc_monotonize`` clamps backward steps, again hiding a clock jump the ring must report.
- ``proc_threadsafe`` is not needed: one acquisition thread reads each inlet.

A chunk whose time stamps step backwards is split there, so the ring buffer sees (and
reports) the jump between two chunks instead of refusing the whole chunk.

Channel metadata
----------------
The outlet's ``desc/channels/channel`` entries give ``label``, ``type`` (an MNE channel type
such as ``eeg``, ``mag``, ``grad``, ``stim``, or the XDF names ``EEG``, ``MEG``, ...),
``unit`` (``V``, ``microvolts``, ``uV``, ``fT``, ``fT/cm``, ..., or a power of ten such as
``-6`` meaning 1e-6 of the SI unit) and ``location`` (``X``, ``Y``, ``Z`` in millimetres).
Samples are scaled to SI units (volts, tesla, tesla/metre). Without labels the channels are
named ``ch1``, ``ch2``, ...; without types, the stream's type decides (``EEG`` streams hold
EEG channels) or ``misc``; without units, the values are taken to be SI already. An outlet
whose ``desc/simulated`` is ``true`` is labelled simulated.

Network configuration
---------------------
LSL finds outlets by multicast, which some networks and containers block.
:func:`write_loopback_config` writes a liblsl configuration that keeps discovery on this
machine (unicast to 127.0.0.1); point the ``LSLAPICFG`` environment variable at it before the
first LSL call of the process (:func:`use_loopback_config` does both).

Several streams
---------------
``LSLSpec.merge_with`` appends the channels of further streams of the same nominal rate to
the first one's. Alignment rule: each stream's time stamps are mapped onto the local clock
with its own ``time_correction()``; every sample of the first stream takes, from each other
stream, the sample nearest in time within half a sample period, or NaN when there is none
(the ring buffer then flags the windows as non-finite). A sample of the first stream is
released once every other stream has delivered a sample at least as late as it minus half a
period (no closer partner can still arrive) or has stalled; the first stream's time stamps
and clock offset are the merged stream's. Samples of the other streams that no sample of the
first takes are dropped.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import mne
import numpy as np
import pylsl
from numpy.typing import NDArray
from pylsl.util import LostError
from pylsl.util import TimeoutError as LSLTimeoutError

from neurocast.streaming.engine.ring import first_backstep
from neurocast.streaming.sources.base import (
    Chunk,
    Marker,
    SourceError,
    SourceStatus,
    StreamInfo,
    local_clock,
    require_open,
)
from neurocast.streaming.sources.specs import LSLSpec, LSLStreamSelector

logger = logging.getLogger(__name__)

_OFFSET_REFRESH_S = 1.0  # how often the clock offset estimate is read again
_RECONNECT_TIMEOUT_S = 0.5  # how long a stream that is found again may take to answer
_POLL_S = 0.01  # how often a resolver is asked for what it found
_MERGE_POLL_S = 0.005  # longest wait on one inlet while another has samples pending

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


def write_loopback_config(path: str | Path, session_id: str = "default") -> Path:
    """Write a liblsl configuration that keeps LSL discovery on this machine.

    Outlets and inlets are found by unicast queries to 127.0.0.1 (no multicast, no IPv6), so
    LSL works where multicast is blocked and nothing leaves the machine.

    Parameters
    ----------
    path : str | Path
        Where to write the file.
    session_id : str
        LSL session id: only outlets and inlets with the same session id see each other,
        which isolates concurrent runs on one machine.

    Returns
    -------
    path : Path
        The file written. Set ``os.environ["LSLAPICFG"]`` to it before the process (and any
        child process) makes its first LSL call; liblsl reads its configuration only once.
    """
    path = Path(path)
    path.write_text(
        "[ports]\nIPv6 = disable\n"
        "[multicast]\nResolveScope = machine\n"
        f"[lab]\nKnownPeers = {{127.0.0.1}}\nSessionID = {session_id}\n"
        "[log]\nlevel = -1\n"
    )
    return path


def use_loopback_config(session_id: str) -> Path:
    """Point this process and its future child processes at a private loopback configuration.

    Writes :func:`write_loopback_config` into a temporary folder (removed when the process
    exits) and sets ``LSLAPICFG`` to it. Call it before the process's first LSL call.

    Parameters
    ----------
    session_id : str
        LSL session id; a unique one isolates this process from other LSL users.

    Returns
    -------
    path : Path
        The configuration file written.
    """
    folder = tempfile.mkdtemp(prefix="neurocast-lsl-")
    atexit.register(shutil.rmtree, folder, True)
    path = write_loopback_config(Path(folder) / "lsl_api.cfg", session_id)
    os.environ["LSLAPICFG"] = str(path)
    return path


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


def _build_info(channels: list[ChannelDesc], sfreq: float) -> mne.Info:
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


def _xpath_literal(value: str) -> str:
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise SourceError(
        f"The LSL selector value {value!r} holds both quote characters, which LSL's query "
        "language cannot express; select the stream by another field."
    )


def _describe_selector(sel: LSLStreamSelector) -> str:
    parts = [f"{f}={v!r}" for f in ("name", "type", "source_id") if (v := getattr(sel, f))]
    return " and ".join(parts)


def _poll(resolver: pylsl.ContinuousResolver, timeout_s: float, stop_early: bool) -> list:
    # a continuous resolver, polled, keeps to the timeout and returns as soon as a stream
    # answers (liblsl's one-shot resolve sometimes overruns short timeouts by seconds)
    deadline = local_clock() + timeout_s
    while True:
        found = resolver.results()
        remaining = deadline - local_clock()
        if (found and stop_early) or remaining <= 0:
            return found
        time.sleep(min(_POLL_S, remaining))


def _describe_visible(wait_s: float) -> str:
    streams = _poll(pylsl.ContinuousResolver(), wait_s, stop_early=False)
    if not streams:
        return (
            "No LSL stream is visible at all: check that the outlet runs, that both sides use "
            "the same LSL configuration (LSLAPICFG, SessionID) and that the network lets LSL's "
            "discovery through (multicast, or KnownPeers in lsl_api.cfg)."
        )
    lines = [
        f"  name={s.name()!r} type={s.type()!r} source_id={s.source_id()!r} "
        f"({s.channel_count()} channels at {s.nominal_srate():g} Hz on {s.hostname()!r})"
        for s in streams
    ]
    return "Streams visible now:\n" + "\n".join(lines)


def _predicate(sel: LSLStreamSelector) -> str:
    return " and ".join(
        f"{f}={_xpath_literal(v)}" for f in ("name", "type", "source_id") if (v := getattr(sel, f))
    )


def _find(sel: LSLStreamSelector, timeout_s: float) -> list[pylsl.StreamInfo]:
    return _poll(pylsl.ContinuousResolver(pred=_predicate(sel)), timeout_s, stop_early=True)


def resolve_stream(sel: LSLStreamSelector, timeout_s: float) -> pylsl.StreamInfo:
    """Find the LSL stream a selector describes.

    Parameters
    ----------
    sel : LSLStreamSelector
        Name, type and/or source id; every field given must match.
    timeout_s : float
        How long to look, in seconds.

    Returns
    -------
    info : pylsl.StreamInfo
        The first matching stream (a warning names the others when several match).

    Raises
    ------
    SourceError
        If nothing matches within ``timeout_s``; the message lists the streams that are
        visible.
    """
    found = _find(sel, timeout_s)
    if not found:
        raise SourceError(
            f"No LSL stream with {_describe_selector(sel)} was found within {timeout_s:g} s. "
            + _describe_visible(min(1.0, timeout_s))
        )
    if len(found) > 1:
        logger.warning(
            "%d LSL streams match %s; using source_id=%r. Select by source_id to choose.",
            len(found),
            _describe_selector(sel),
            found[0].source_id(),
        )
    return found[0]


class _Inlet:
    """One LSL inlet: resolution, pulling into a preallocated buffer, stall and loss."""

    def __init__(self, sel: LSLStreamSelector, spec: LSLSpec) -> None:
        self.sel = sel
        self.spec = spec
        self.inlet: pylsl.StreamInlet | None = None
        self.info: pylsl.StreamInfo | None = None
        self.offset = 0.0
        self.last_data = 0.0
        self.lost = False
        self._next_offset = 0.0
        self._resolver: pylsl.ContinuousResolver | None = None
        self._buf: NDArray | None = None
        self._scale: NDArray[np.float64] | None = None

    def open(self, timeout_s: float) -> pylsl.StreamInfo:
        found = resolve_stream(self.sel, timeout_s)
        try:
            self._connect(found, timeout_s)
        except (LSLTimeoutError, LostError) as exc:
            raise SourceError(
                f"LSL stream {found.name()!r} (source_id={found.source_id()!r}) was found but "
                f"did not answer within {timeout_s:g} s ({exc}); check that the outlet is alive."
            ) from exc
        assert self.info is not None
        return self.info

    def _connect(
        self, found: pylsl.StreamInfo, timeout_s: float, *, reconnect: bool = False
    ) -> None:
        # recover=True: liblsl silently reconnects to an outlet with the same source id.
        # max_buflen is in seconds (x100 samples for irregular streams).
        inlet = pylsl.StreamInlet(
            found, max_buflen=self.spec.buffer_s, recover=True, processing_flags=pylsl.proc_none
        )
        info = inlet.info(timeout=timeout_s)
        inlet.open_stream(timeout=timeout_s)
        try:
            # the first estimate takes a few probes (~0.6 s); on a reconnection the
            # periodic refresh picks it up instead of holding up the samples
            offset = inlet.time_correction(timeout=0.0 if reconnect else timeout_s)
        except LSLTimeoutError:
            if not reconnect:
                raise
            offset = self.offset
        if self.info is not None and (
            info.channel_count() != self.info.channel_count()
            or info.channel_format() != self.info.channel_format()
        ):
            raise SourceError(
                f"LSL stream {info.name()!r} came back with {info.channel_count()} channels "
                f"(format {info.channel_format()}) instead of {self.info.channel_count()} "
                f"(format {self.info.channel_format()}); restart the source to rebuild its buffer."
            )
        self.inlet, self.info, self.offset, self.lost = inlet, info, offset, False
        now = local_clock()
        self.last_data = now
        self._next_offset = now + _OFFSET_REFRESH_S
        if info.channel_format() != pylsl.cf_string and self._buf is None:
            rate = info.nominal_srate() or 100.0  # irregular streams: buffer counts x100 samples
            n = max(1, int(np.ceil(rate * self.spec.buffer_s)))
            dtype = inlet.np_dtype
            self._buf = np.empty((n, info.channel_count()), dtype=dtype)

    def set_scale(self, scale: NDArray[np.float64]) -> None:
        self._scale = None if np.all(scale == 1.0) else scale

    def stalled(self, now: float) -> bool:
        return self.lost or now - self.last_data > self.spec.stall_after_s

    def _pulled(self, now: float) -> None:
        self.last_data = now
        if now >= self._next_offset:
            self._next_offset = now + _OFFSET_REFRESH_S
            assert self.inlet is not None
            # instantaneous after the first estimate (updated in the background); on failure
            # the last estimate stays
            with contextlib.suppress(LSLTimeoutError, LostError):
                self.offset = self.inlet.time_correction(timeout=0.0)

    def _retry(self, timeout_s: float) -> bool:
        """Look for a lost, non-recoverable stream again; True when it is back.

        A continuous resolver searches in the background, so this never blocks for long;
        without a match it waits ``timeout_s`` like an empty pull would.
        """
        if self._resolver is None:
            self._resolver = pylsl.ContinuousResolver(pred=_predicate(self.sel))
        found = self._resolver.results()
        if not found:
            time.sleep(timeout_s)
            return False
        try:
            self._connect(found[0], _RECONNECT_TIMEOUT_S, reconnect=True)
        except (LSLTimeoutError, LostError):
            return False
        self._resolver = None
        logger.info("LSL stream %s is back.", _describe_selector(self.sel))
        return True

    def pull(self, timeout_s: float) -> tuple[NDArray, NDArray[np.float64]] | None:
        """Samples (n, channels) in SI units and their LSL time stamps, or None."""
        if self.lost and not self._retry(timeout_s):
            return None
        assert self.inlet is not None and self._buf is not None
        try:
            _, ts = self.inlet.pull_chunk(
                timeout=timeout_s,
                max_samples=self._buf.shape[0],
                dest_obj=self._buf,
                min_samples=1,
                as_numpy=True,
            )
        except LostError:
            # only outlets without a source id get here; the others recover in liblsl
            logger.warning(
                "LSL stream %s was lost (it has no source id, so liblsl cannot recover it); "
                "looking for it again.",
                _describe_selector(self.sel),
            )
            self.lost = True
            return None
        n = len(ts)
        if n == 0:
            return None
        self._pulled(local_clock())
        raw = self._buf[:n]
        if self._scale is not None:
            data = raw * self._scale  # a new array: the buffer is reused by the next pull
        elif raw.dtype.kind == "f":
            data = raw.copy()
        else:
            data = raw.astype(np.float32)
        return data, ts

    def pull_markers(self) -> list[Marker]:
        """Events available now, on this inlet's clock."""
        if self.lost and not self._retry(0.0):
            return []
        assert self.inlet is not None and self.info is not None
        try:
            if self.info.channel_format() == pylsl.cf_string:
                values, ts = self.inlet.pull_chunk(timeout=0.0, max_samples=1024)
                texts = ["/".join(v) for v in values]
            else:
                arr, ts = self.inlet.pull_chunk(timeout=0.0, max_samples=1024, as_numpy=True)
                fmt = str if arr.dtype.kind in "iu" else repr
                texts = ["/".join(fmt(x) for x in row.tolist()) for row in arr]
        except LostError:
            self.lost = True
            return []
        if len(ts):
            self._pulled(local_clock())
        return [Marker(float(t), v) for t, v in zip(ts, texts, strict=True)]

    def close(self) -> None:
        if self.inlet is not None:
            self.inlet.close_stream()
        self.inlet = self._resolver = None


class _Aligner:
    """Merges streams of one nominal rate onto the first stream's samples (the alignment
    rule is in the module docstring); times are on the local clock."""

    def __init__(self, widths: list[int], sfreq: float, keep: int, dtype: np.dtype) -> None:
        self.tol = 0.5 / sfreq
        self.keep = keep
        self.dtype = dtype
        self.cols = np.cumsum([0, *widths])
        self.src = np.empty(0)  # primary source time stamps
        self.times = [np.empty(0) for _ in widths]  # local-clock times per stream
        self.data = [np.empty((0, w), dtype=dtype) for w in widths]

    def add(self, k: int, data: NDArray, ts: NDArray[np.float64], offset: float) -> None:
        self.times[k] = np.concatenate([self.times[k], ts + offset])[-self.keep :]
        self.data[k] = np.concatenate([self.data[k], data.astype(self.dtype, copy=False)])[
            -self.keep :
        ]
        if k == 0:
            self.src = np.concatenate([self.src, ts])[-self.keep :]

    def take(self, stalled: list[bool]) -> tuple[NDArray, NDArray[np.float64]] | None:
        p_t = self.times[0]
        if not p_t.size:
            return None
        limit = np.inf
        for k in range(1, len(self.times)):
            if stalled[k]:
                continue
            if not self.times[k].size:
                return None
            limit = min(limit, self.times[k][-1] + self.tol)
        n = int(np.searchsorted(p_t, limit, side="right"))
        if n == 0:
            return None
        t = p_t[:n]
        out = np.full((n, self.cols[-1]), np.nan, dtype=self.dtype)
        out[:, : self.cols[1]] = self.data[0][:n]
        for k in range(1, len(self.times)):
            s_t = self.times[k]
            if s_t.size:
                j = np.searchsorted(s_t, t)
                left = np.clip(j - 1, 0, s_t.size - 1)
                right = np.clip(j, 0, s_t.size - 1)
                pick = np.where(np.abs(s_t[left] - t) <= np.abs(s_t[right] - t), left, right)
                ok = np.abs(s_t[pick] - t) <= self.tol
                out[ok, self.cols[k] : self.cols[k + 1]] = self.data[k][pick[ok]]
                rest = int(np.searchsorted(s_t, t[-1] + self.tol, side="right"))
                self.times[k], self.data[k] = s_t[rest:], self.data[k][rest:]
        src = self.src[:n]
        self.times[0], self.data[0], self.src = p_t[n:], self.data[0][n:], self.src[n:]
        return out, src


def _split_at_backstep(
    data: NDArray, ts: NDArray[np.float64]
) -> tuple[tuple[NDArray, NDArray[np.float64]], tuple[NDArray, NDArray[np.float64]] | None]:
    k = first_backstep(ts)
    if k is None:
        return (data, ts), None
    return (data[:k], ts[:k]), (data[k:], ts[k:])


class LSLSource:
    """A live source reading one LSL outlet, or several merged on LSL time.

    Parameters
    ----------
    spec : LSLSpec
        Which stream(s) to resolve (name, type and/or source id; ``merge_with`` for further
        streams of the same rate; ``marker_stream`` for events) and how (resolve timeout,
        inlet buffer length, stall threshold).

    Notes
    -----
    The inlet buffer is ``spec.buffer_s`` seconds (LSL ``max_buflen``): a reader that pauses
    longer gets only the newest samples, never a backlog of stale ones. When an outlet
    vanishes the source reports ``"stalled"`` (after ``spec.stall_after_s`` without samples)
    and picks up again by itself when an outlet with the same source id comes back (liblsl's
    recovery; outlets without a source id are looked for again by the original selector).
    Marker time stamps are mapped onto the clock of the first data stream.
    """

    def __init__(self, spec: LSLSpec) -> None:
        self.spec = spec
        self._streams = [_Inlet(spec, spec), *(_Inlet(s, spec) for s in spec.merge_with)]
        self._markers: _Inlet | None = None
        if spec.marker_stream is not None:
            self._markers = _Inlet(LSLStreamSelector(name=spec.marker_stream), spec)
        self._aligner: _Aligner | None = None
        self._info: StreamInfo | None = None
        self._status: SourceStatus = "starting"
        self._carry: tuple[NDArray, NDArray[np.float64]] | None = None
        self._pending_markers: list[Marker] = []
        self._lock = threading.Lock()

    @property
    def stream_info(self) -> StreamInfo:
        """The stream's metadata (after :meth:`open`)."""
        return require_open(self._info, "LSL")

    @property
    def status(self) -> SourceStatus:
        """``"running"``, or ``"stalled"`` while any stream delivers nothing."""
        if self._status == "running":
            now = local_clock()
            if any(s.stalled(now) for s in self._streams):
                return "stalled"
        return self._status

    def open(self) -> StreamInfo:
        """Resolve the stream(s), read their descriptions and subscribe.

        Raises
        ------
        SourceError
            If a stream is not found (the message lists the visible ones), does not answer,
            has an irregular rate, or the merged streams' rates differ.
        """
        timeout = self.spec.resolve_timeout_s
        try:
            if self._markers is not None:  # subscribed first: no event precedes the data
                self._markers.open(timeout)
            channels: list[ChannelDesc] = []
            simulated = False
            rates = []
            infos = []
            for s in self._streams:
                info = s.open(timeout)
                infos.append(info)
                rate = info.nominal_srate()
                if rate <= 0:
                    raise SourceError(
                        f"LSL stream {info.name()!r} has an irregular sampling rate; neurocast "
                        "cuts windows on a regular sample clock. For events, pass it as "
                        "marker_stream instead."
                    )
                rates.append(rate)
                descs, sim = describe_channels(info.as_xml())
                s.set_scale(np.array([d.scale for d in descs]))
                channels.extend(descs)
                simulated |= sim
            if any(abs(r - rates[0]) > 1e-6 * rates[0] for r in rates):
                raise SourceError(
                    f"Streams to merge must share one sampling rate, got {rates} Hz; resample "
                    "at the outlet or decode them as separate sources."
                )
        except Exception:
            self.close()
            self._status = "failed"
            raise
        if len(self._streams) > 1:
            single = all(i.channel_format() == pylsl.cf_float32 for i in infos)
            dtype = np.dtype(np.float32 if single else np.float64)
            keep = max(2, int(rates[0] * self.spec.buffer_s) * 2)
            self._aligner = _Aligner([i.channel_count() for i in infos], rates[0], keep, dtype)
        self._info = StreamInfo(
            name="+".join(i.name() for i in infos),
            info=_build_info(channels, rates[0]),
            simulated=simulated,
            source_id="+".join(i.source_id() or f"{i.hostname()}/{i.name()}" for i in infos),
        )
        self._status = "running"
        return self._info

    def read(self, timeout: float) -> Chunk | None:
        """The next chunk, or None if nothing arrived within ``timeout`` seconds."""
        with self._lock:
            if self._status != "running":
                raise SourceError(f"The LSL source is {self._status}; open() it before reading.")
            if self._carry is not None:
                got: tuple[NDArray, NDArray[np.float64]] | None = self._carry
                self._carry = None
            elif self._aligner is None:
                got = self._streams[0].pull(timeout)
            else:
                got = self._read_merged(timeout)
            if self._markers is not None:
                offset = self._markers.offset - self._streams[0].offset
                self._pending_markers.extend(
                    Marker(m.timestamp + offset, m.value) for m in self._markers.pull_markers()
                )
            if got is None:
                return None
            (data, ts), self._carry = _split_at_backstep(*got)
            markers, self._pending_markers = self._pending_markers, []
            return Chunk(data, ts, local_clock(), self._streams[0].offset, markers)

    def _read_merged(self, timeout: float) -> tuple[NDArray, NDArray[np.float64]] | None:
        assert self._aligner is not None
        deadline = local_clock() + timeout
        while True:
            for k, s in enumerate(self._streams):
                wait = min(_MERGE_POLL_S, max(0.0, deadline - local_clock())) if k == 0 else 0.0
                got = s.pull(wait)
                if got is not None:
                    self._aligner.add(k, got[0], got[1], s.offset)
            now = local_clock()
            out = self._aligner.take([s.stalled(now) for s in self._streams])
            if out is not None or now >= deadline:
                return out

    def close(self) -> None:
        """Unsubscribe from every stream; safe to call twice."""
        with self._lock:
            for s in [*self._streams, *([self._markers] if self._markers else [])]:
                s.close()
            self._status = "stopped"
