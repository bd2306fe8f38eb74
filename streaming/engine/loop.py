"""The live decode loop: an acquisition thread and a decode thread around a DecodeEngine."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from neurocast.streaming.engine.pipeline import DecodeEngine, WindowModel
from neurocast.streaming.engine.results import Result
from neurocast.streaming.sources.base import Source, SourceStatus, StreamInfo, local_clock

logger = logging.getLogger(__name__)

ResultSink = Callable[[Result], None]


@dataclass(frozen=True)
class LoopStats:
    """Counters and latency percentiles of a running loop (milliseconds)."""

    status: SourceStatus
    n_decoded: int
    n_skipped: int
    decode_rate_hz: float
    latency_p50_ms: dict[str, float]
    latency_p99_ms: dict[str, float]
    error: str | None
    skipped_by_reason: dict[str, int]
    clock_ahead_ms: float
    """How far the source clock ran ahead of the local one over the recent windows (the most
    negative acquisition latency, as a positive number; 0 when it never did)."""


class DecodeLoop:
    """Runs a source and a set of models live.

    The acquisition thread reads chunks into the engine's ring buffer as fast as the source
    delivers them; the decode thread wakes when a window is due and decodes every due window
    in order, skipping (and counting) only the windows that waited longer than ``max_lag_s``
    beyond their delivery: a source delivering 1 s blocks is decoded window for window, a
    decoder that cannot keep up skips and never falls further behind. Results go to ``sink``
    from the decode thread, one window at a time; the sink must not block (the WebSocket hub
    hands them to per-client bounded queues).

    Parameters
    ----------
    source : Source
        An unopened source; the loop opens and closes it.
    models : sequence of WindowModel
        Decoders to run on every window.
    sink : callable
        Called with every :class:`~neurocast.streaming.engine.results.Result`.
    stride_s : float
        Time between window ends in seconds.
    max_lag_s : float
        Latency budget in seconds (see :mod:`neurocast.streaming.engine.budget`).
    """

    def __init__(
        self,
        source: Source,
        models: Sequence[WindowModel],
        sink: ResultSink,
        *,
        stride_s: float = 0.025,
        max_lag_s: float = 0.25,
    ) -> None:
        self.source = source
        self.models = list(models)
        self.sink = sink
        self.stride_s = stride_s
        self.max_lag_s = max_lag_s
        self.engine: DecodeEngine | None = None
        self.error: str | None = None
        self._failed = False  # a fatal error (not a refused chunk) ended the loop
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started_at = 0.0
        self._lat: dict[str, deque[float]] = {
            k: deque(maxlen=2000)
            for k in ("acquisition_ms", "preprocessing_ms", "inference_ms", "total_ms")
        }

    @property
    def stream_info(self) -> StreamInfo:
        """The stream's metadata (available after :meth:`start`)."""
        return self.source.stream_info

    def start(self) -> None:
        """Open the source, check the models against it and start both threads.

        Raises
        ------
        SourceError, ValueError
            If the source cannot be opened or a model does not fit the stream.
        """
        stream = self.source.open()
        try:
            self.engine = DecodeEngine(
                stream, self.models, stride_s=self.stride_s, max_lag_s=self.max_lag_s
            )
        except Exception:
            self.source.close()
            raise
        self._started_at = local_clock()
        self._threads = [
            threading.Thread(target=self._acquire, name="neurocast-acquire", daemon=True),
            threading.Thread(target=self._decode, name="neurocast-decode", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop both threads and close the source; safe to call more than once."""
        self._stop.set()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout)
        self.source.close()

    @property
    def running(self) -> bool:
        """True while both threads are alive."""
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def _acquire(self) -> None:
        assert self.engine is not None
        ring = self.engine.ring
        try:
            while not self._stop.is_set():
                chunk = self.source.read(0.1)
                if chunk is None:
                    continue
                try:
                    self.engine.write(chunk)
                except ValueError as exc:
                    # a malformed chunk is refused whole; the stream goes on
                    logger.warning("Chunk refused: %s", exc)
                    self.error = str(exc)
        except Exception as exc:  # the source died: report it, stop decoding
            logger.exception("Acquisition failed")
            self.error = f"{type(exc).__name__}: {exc}"
            self._failed = True
            self._stop.set()
        finally:
            ring.wake()  # so the decode thread sees the stop

    def _decode(self) -> None:
        assert self.engine is not None
        engine = self.engine
        try:
            while not self._stop.is_set():
                if not engine.ring.wait_for(engine.clock.next_end, timeout=0.2):
                    continue
                while not self._stop.is_set():
                    results = engine.decode_next()
                    if results is None:
                        break
                    for result in results:
                        self._record(result)
                        self.sink(result)
        except Exception as exc:
            logger.exception("Decoding failed")
            self.error = f"{type(exc).__name__}: {exc}"
            self._failed = True
            self._stop.set()

    def _record(self, result: Result) -> None:
        lat = result.latency
        self._lat["acquisition_ms"].append(lat.acquisition_ms)
        self._lat["preprocessing_ms"].append(lat.preprocessing_ms)
        self._lat["inference_ms"].append(lat.inference_ms)
        self._lat["total_ms"].append(lat.acquisition_ms + lat.preprocessing_ms + lat.inference_ms)

    def stats(self) -> LoopStats:
        """Counters and latency percentiles so far."""
        clock = self.engine.clock if self.engine else None
        n_decoded = clock.n_decoded if clock else 0
        elapsed = max(local_clock() - self._started_at, 1e-9) if self._started_at else 0.0
        p50: dict[str, float] = {}
        p99: dict[str, float] = {}
        for k, v in self._lat.items():
            if v:
                a = np.fromiter(v, dtype=np.float64)
                p50[k], p99[k] = (float(x) for x in np.percentile(a, [50, 99]))
        if self._failed and not self.running:
            status: SourceStatus = "failed"
        elif self._stop.is_set() or not self._threads:
            status = "stopped"
        else:
            status = self.source.status
        return LoopStats(
            status=status,
            n_decoded=n_decoded,
            n_skipped=clock.n_skipped if clock else 0,
            decode_rate_hz=n_decoded / elapsed if elapsed else 0.0,
            latency_p50_ms=p50,
            latency_p99_ms=p99,
            error=self.error,
            skipped_by_reason=dict(clock.skipped_by_reason) if clock else {},
            clock_ahead_ms=max(0.0, -min(self._lat["acquisition_ms"], default=0.0)),
        )
