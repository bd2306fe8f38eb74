"""Replay every stream of an XDF file as live LSL streams, with their original relative timing.

The file is read with pyxdf up to its last complete chunk, clocks synchronised with its
ClockOffset chunks and regular streams dejittered (pyxdf's linear fit per segment), so that
all streams share one timeline. Each stream gets an outlet with its name, type, channel count,
rate, format, source id and ``desc`` (channel labels, types, units, locations) as recorded.
A sample recorded ``d`` seconds after the earliest sample of the file is published no earlier
than ``d / speed`` seconds after the replay starts and stamped with exactly that local time,
so the relative timing between samples and streams is the recorded one (divided by
``speed``).
"""

from __future__ import annotations

import logging
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pylsl
from numpy.typing import NDArray

from neurocast.streaming.recording.read import XDFScan, load_xdf
from neurocast.streaming.recording.xdf import NUMERIC_FORMATS
from neurocast.streaming.sources.base import local_clock
from neurocast.streaming.sources.replay import OUTLET_BUFFER_S, Player, wait_for_inlets

logger = logging.getLogger(__name__)

_LSL_FORMATS = {
    "float32": pylsl.cf_float32,
    "double64": pylsl.cf_double64,
    "string": pylsl.cf_string,
    "int8": pylsl.cf_int8,
    "int16": pylsl.cf_int16,
    "int32": pylsl.cf_int32,
    "int64": pylsl.cf_int64,
}


@dataclass
class _Track:
    """One stream being replayed."""

    name: str
    outlet: pylsl.StreamOutlet
    due: NDArray[np.float64]  # local-clock time of each sample, set when the replay starts
    offsets: NDArray[np.float64]  # seconds after the file's first sample
    values: Any
    string: bool
    next: int = 0


def _copy_xml(src: ET.Element, dst: pylsl.XMLElement) -> None:
    for child in src:
        if len(child):
            _copy_xml(child, dst.append_child(child.tag))
        else:
            dst.append_child_value(child.tag, child.text or "")


class XDFPlayer(Player):
    """Publish the streams of an XDF file as LSL outlets at their recorded pace.

    Parameters
    ----------
    path : str | Path
        The XDF file (a truncated file is replayed up to its last complete chunk;
        :attr:`scan` says where it was cut).
    speed : float
        Replay speed; 1 is real time.
    name_prefix : str
        Put before every stream name (e.g. to tell a replay from the live devices).
    wait_for_consumer : bool
        Start the replay clock only once every outlet has an inlet (or after
        ``wait_timeout_s``), so the inlets get the first samples.
    wait_timeout_s : float
        Longest wait for inlets, in seconds.
    chunk_s : float
        Samples are pushed in groups at most this far apart, in seconds.
    linger_s : float
        Keep the outlets open this long after the last sample so that inlets get it.

    Notes
    -----
    :meth:`run` counts the samples of all streams together; it raises
    :class:`~.read.XDFFormatError` or :class:`OSError` if the file cannot be read.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        speed: float = 1.0,
        name_prefix: str = "",
        wait_for_consumer: bool = False,
        wait_timeout_s: float = 30.0,
        chunk_s: float = 0.01,
        linger_s: float = 1.0,
    ) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}.")
        self.path = Path(path)
        self.speed = speed
        self.name_prefix = name_prefix
        self.wait_for_consumer = wait_for_consumer
        self.wait_timeout_s = wait_timeout_s
        self.chunk_s = chunk_s
        self.linger_s = linger_s
        self.scan: XDFScan | None = None
        self.stream_names: list[str] = []

    def load(self) -> list[dict[str, Any]]:
        """Read the file (pyxdf, clocks synchronised, regular streams dejittered).

        Returns
        -------
        streams : list of dict
            pyxdf's streams; :attr:`scan` is set.
        """
        streams, _, self.scan = load_xdf(
            self.path, synchronize_clocks=True, dejitter_timestamps=True, verbose=False
        )
        if self.scan.truncated:
            logger.warning("%s", self.scan.message())
        return streams

    def _play(self, stop: threading.Event, started: threading.Event) -> int:
        streams = self.load()
        assert self.scan is not None
        headers = self.scan.headers
        tracks = [self._track(s, headers.get(int(s["info"]["stream_id"]))) for s in streams]
        self.stream_names = [t.name for t in tracks]
        firsts = [t.offsets[0] for t in tracks if t.offsets.size]
        t0 = min(firsts) if firsts else 0.0
        if self.wait_for_consumer:
            wait_for_inlets([t.outlet for t in tracks], stop, self.wait_timeout_s)
        start = local_clock()
        for t in tracks:
            t.offsets = t.offsets - t0
            t.due = start + t.offsets / self.speed
        started.set()
        n = 0
        while not stop.is_set():
            now = local_clock()
            next_due = np.inf
            for t in tracks:
                j = int(np.searchsorted(t.due, now, side="right"))
                if j > t.next:
                    n += self._push(t, t.next, j)
                    t.next = j
                if t.next < t.due.size:
                    next_due = min(next_due, float(t.due[t.next]))
            if not np.isfinite(next_due):
                stop.wait(self.linger_s)
                break
            stop.wait(max(next_due - local_clock(), self.chunk_s))
        return n

    @staticmethod
    def _push(t: _Track, i: int, j: int) -> int:
        stamps = t.due[i:j]
        if t.string:
            for k in range(i, j):
                t.outlet.push_sample([str(v) for v in t.values[k]], float(t.due[k]))
        else:
            t.outlet.push_chunk(np.ascontiguousarray(t.values[i:j]), stamps.tolist())
        return j - i

    def _track(self, stream: dict[str, Any], xml: str | None) -> _Track:
        info = stream["info"]
        name = self.name_prefix + info["name"][0]
        fmt = info["channel_format"][0]
        n_ch = int(info["channel_count"][0])
        srate = float(info["nominal_srate"][0])
        source_id = (info.get("source_id") or [""])[0] or ""
        out = pylsl.StreamInfo(
            name,
            (info.get("type") or [""])[0] or "",
            n_ch,
            srate,
            _LSL_FORMATS[fmt],
            (self.name_prefix + source_id) if source_id else f"neurocast-xdf-replay:{name}",
        )
        if xml is not None:
            desc = ET.fromstring(xml).find("desc")
            if desc is not None:
                _copy_xml(desc, out.desc())
        outlet = pylsl.StreamOutlet(out, max_buffered=OUTLET_BUFFER_S)
        ts = np.asarray(stream["time_stamps"], dtype=np.float64)
        values: Any = stream["time_series"]
        if fmt != "string":
            values = np.asarray(values, dtype=NUMERIC_FORMATS[fmt].newbyteorder("="))
        return _Track(name, outlet, ts.copy(), ts, values, fmt == "string")
