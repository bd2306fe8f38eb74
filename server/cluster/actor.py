"""The session actor: one live decoding session (source, models, DecodeLoop) in a Ray worker.

The class is plain Python; :func:`neurocast.server.cluster.remote.spawn_session_actor` makes it
a Ray actor with the resources the settings declare. Results wait in a bounded queue inside
the actor until the gateway pulls them (:meth:`SessionActor.next_results`); when the gateway
falls behind, the oldest results are dropped and counted, so a slow gateway never slows the
decode thread.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from neurocast.catalog import load_models
from neurocast.server.cluster.plain import result_to_plain, stats_to_plain
from neurocast.streaming.engine.loop import DecodeLoop
from neurocast.streaming.engine.pipeline import WindowModel
from neurocast.streaming.engine.results import Result
from neurocast.streaming.sources.base import local_clock
from neurocast.streaming.sources.open import open_source
from neurocast.streaming.sources.specs import SourceSpec

logger = logging.getLogger(__name__)

_SPEC: TypeAdapter[SourceSpec] = TypeAdapter(SourceSpec)

#: Concurrent calls a session actor serves: a pull that waits for results must not hold up
#: ``stats`` or ``stop``.
ACTOR_CONCURRENCY = 4


class SessionActor:
    """A live session decoding in its own process.

    Parameters
    ----------
    source : dict
        The source spec as plain data (``SourceSpec.model_dump()``).
    model_ids : list of str
        Models to run (installed artifact names).
    models_dir : str | None
        Folder searched for artifacts besides the packaged ones.
    stride_s : float
        Time between window ends in seconds.
    max_lag_s : float
        Latency budget in seconds (see :class:`~neurocast.streaming.engine.loop.DecodeLoop`).
    queue_size : int
        Results kept for the gateway; beyond it the oldest is dropped and counted.
    threads : int | None
        Intra-op threads of the models this actor loads (None: the runtime's default).
    pool : dict of str to str | None
        Models decoded by the shared pool: model id to Serve application name.
    """

    def __init__(
        self,
        source: dict[str, Any],
        model_ids: list[str],
        *,
        models_dir: str | None = None,
        stride_s: float = 0.025,
        max_lag_s: float = 0.25,
        queue_size: int = 256,
        threads: int | None = None,
        pool: dict[str, str] | None = None,
    ) -> None:
        self.spec = _SPEC.validate_python(source)
        self.model_ids = list(model_ids)
        self.models_dir = Path(models_dir) if models_dir else None
        self.stride_s = stride_s
        self.max_lag_s = max_lag_s
        self.threads = threads
        self.pool = dict(pool or {})
        self._queue: deque[dict[str, Any]] = deque(maxlen=queue_size)
        self._cond = threading.Condition()
        self._dropped = 0  # since the last pull
        self._dropped_total = 0
        self.loop: DecodeLoop | None = None

    def _models(self) -> list[WindowModel]:
        local = [m for m in self.model_ids if m not in self.pool]
        loaded = dict(zip(local, load_models(local, self.models_dir), strict=True))
        if len(loaded) < len(self.model_ids):
            from neurocast.server.cluster.pool import PooledWindowModel

            for model_id, app in self.pool.items():
                if model_id in self.model_ids:
                    loaded[model_id] = PooledWindowModel.connect(model_id, app, self.models_dir)
        return [loaded[m] for m in self.model_ids]

    def _put(self, result: Result) -> None:
        record = result_to_plain(result)
        with self._cond:
            if len(self._queue) == self._queue.maxlen:
                self._dropped += 1
                self._dropped_total += 1
            self._queue.append(record)  # a full deque drops its oldest
            self._cond.notify()

    def start(self) -> dict[str, Any]:
        """Load the models, open the source and start decoding.

        Returns
        -------
        reply : dict
            ``{"error": None, "stream": StreamInfo, "pid": int}`` once decoding runs, or
            ``{"error": "Type: reason"}`` when the source cannot be opened or a model does not
            fit (the actor stays up so that the gateway can read the reason).
        """
        try:
            self.loop = DecodeLoop(
                open_source(self.spec),
                self._models(),
                self._put,
                stride_s=self.stride_s,
                max_lag_s=self.max_lag_s,
            )
            self.loop.start()
        except Exception as exc:
            text = str(exc).strip()
            return {"error": f"{type(exc).__name__}: {text}" if text else type(exc).__name__}
        assert self.loop.engine is not None
        # the whole StreamInfo (its mne.Info pickles): the gateway lists channels and
        # positions from it as it does for an in-process session
        return {"error": None, "pid": os.getpid(), "stream": self.loop.engine.stream}

    def clock(self) -> float:
        """This process's :func:`~neurocast.streaming.sources.base.local_clock`, in seconds."""
        return local_clock()

    def node_id(self) -> str:
        """The Ray node this actor runs on (to tell whether it shares the gateway's clock)."""
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def next_results(self, max_n: int = 64, timeout_s: float = 0.05) -> dict[str, Any]:
        """Take up to ``max_n`` queued results, waiting up to ``timeout_s`` for the first.

        Returns
        -------
        batch : dict
            ``results`` (list of plain records, oldest first), ``dropped`` (results dropped
            since the previous pull because the queue was full), ``running`` and ``error``
            (the loop's, e.g. a source that died).
        """
        with self._cond:
            if not self._queue:
                self._cond.wait(timeout_s)
            n = min(max_n, len(self._queue))
            results = [self._queue.popleft() for _ in range(n)]
            dropped, self._dropped = self._dropped, 0
        loop = self.loop
        return {
            "results": results,
            "dropped": dropped,
            "running": bool(loop is not None and loop.running),
            "error": loop.error if loop is not None else None,
        }

    def stats(self) -> dict[str, Any]:
        """The loop's counters and latency percentiles (plain :class:`LoopStats`), plus
        ``dropped_total``: results dropped because the gateway fell behind."""
        if self.loop is None:
            raise RuntimeError("The session has not started.")
        record = stats_to_plain(self.loop.stats())
        with self._cond:
            record["dropped_total"] = self._dropped_total
        return record

    def stop(self) -> dict[str, Any] | None:
        """Stop decoding and close the source; returns the final stats (None if never
        started)."""
        if self.loop is None:
            return None
        self.loop.stop()
        with self._cond:
            self._cond.notify_all()
        return self.stats()
