"""The gateway's side of a session running in a Ray actor: creation, relay, restarts.

:class:`RemoteLoop` has the shape of :class:`~neurocast.streaming.engine.loop.DecodeLoop`
(``start``, ``stop``, ``stats``, ``running``, ``engine.stream``), so a server session can run
either. Its relay is an asyncio task on the gateway's event loop: it pulls batches of results
from the actor and hands each to the sink (the WebSocket hub's ``publish``). The actor never
waits for the relay (its queue drops the oldest results when the gateway falls behind), so a
slow gateway never blocks decoding.

A dead actor (killed, its node lost) turns the session ``failed`` with Ray's reason, or, with
the ``on_failure`` restart policy, is re-created: the new actor opens the source again and
decoding resumes on the live stream. Window indices (``window_end``) restart from 0 with the
new source; what was queued in the dead actor is lost.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import ray
from ray.actor import ActorHandle
from ray.exceptions import RayActorError

from neurocast.server.cluster.actor import ACTOR_CONCURRENCY, SessionActor
from neurocast.server.cluster.plain import result_from_plain, stats_from_plain
from neurocast.server.cluster.settings import ClusterSettings
from neurocast.streaming.engine.loop import LoopStats
from neurocast.streaming.engine.results import Result
from neurocast.streaming.sources.base import StreamInfo, local_clock
from neurocast.streaming.sources.specs import SourceSpec

logger = logging.getLogger(__name__)

ResultCallback = Callable[[Result], None]


def connect(settings: ClusterSettings | None = None, **init_kwargs: Any) -> None:
    """Join (or start) the Ray cluster the settings name, once per process.

    Parameters
    ----------
    settings : ClusterSettings | None
        ``address`` and ``namespace`` (default: from the environment).
    **init_kwargs
        Passed to ``ray.init`` when this call starts Ray (e.g. ``num_cpus``).
    """
    if ray.is_initialized():
        return
    s = settings or ClusterSettings()
    ray.init(address=s.address, namespace=s.namespace, **init_kwargs)


@dataclass(frozen=True)
class RemoteEngine:
    """Stands for ``DecodeLoop.engine`` where a server session reads ``engine.stream``."""

    stream: StreamInfo


def spawn_session_actor(
    settings: ClusterSettings,
    source: SourceSpec,
    model_ids: Sequence[str],
    *,
    models_dir: Path | None = None,
    stride_s: float = 0.025,
    max_lag_s: float = 0.25,
    threads: int | None = None,
) -> ActorHandle:
    """Create a :class:`~.actor.SessionActor` with the resources the settings declare.

    The actor is not restarted by Ray itself (``max_restarts=0``): a re-created actor must
    open its source again, which :class:`RemoteLoop` does and counts.
    """
    cls = ray.remote(SessionActor).options(
        num_cpus=settings.session_num_cpus,
        num_gpus=settings.session_num_gpus,
        max_concurrency=ACTOR_CONCURRENCY,
        max_restarts=0,
    )
    handle = cast(
        ActorHandle,
        cls.remote(
            source.model_dump(mode="json"),
            list(model_ids),
            models_dir=str(models_dir) if models_dir else None,
            stride_s=stride_s,
            max_lag_s=max_lag_s,
            queue_size=settings.queue_size,
            threads=threads,
            pool=settings.pooled(),
        ),
    )
    return handle


class RemoteLoop:
    """A live session decoding in a Ray actor, relayed to a callback on an asyncio loop.

    Parameters
    ----------
    source : SourceSpec
        What the actor opens (file paths must be readable where the actor runs).
    model_ids : sequence of str
        Models to run.
    sink : callable
        Called on ``loop``'s thread with every :class:`Result` (e.g. ``Hub.publish``).
    loop : asyncio.AbstractEventLoop
        The gateway's event loop, where the relay runs.
    settings : ClusterSettings | None
        Resources, queue size, relay and restart policy (default: from the environment).
    stride_s : float
        Time between window ends in seconds.
    max_lag_s : float
        Latency budget in seconds.
    models_dir : Path | None
        Folder of artifacts besides the packaged ones (as seen by the actor).
    threads : int | None
        Intra-op threads of the models the actor loads.

    Attributes
    ----------
    restarts : int
        Times the actor was re-created after dying.
    dropped_total : int
        Results dropped in the actor's queue because the relay fell behind.
    error : str | None
        Why the session failed (the loop's error, or the dead actor's reason).
    """

    def __init__(
        self,
        source: SourceSpec,
        model_ids: Sequence[str],
        sink: ResultCallback,
        *,
        loop: asyncio.AbstractEventLoop,
        settings: ClusterSettings | None = None,
        stride_s: float = 0.025,
        max_lag_s: float = 0.25,
        models_dir: Path | None = None,
        threads: int | None = None,
    ) -> None:
        self.source_spec = source
        self.model_ids = list(model_ids)
        self.sink = sink
        self.event_loop = loop
        self.settings = settings or ClusterSettings()
        self.stride_s = stride_s
        self.max_lag_s = max_lag_s
        self.models_dir = models_dir
        self.threads = threads
        self.actor: ActorHandle | None = None
        self.engine: RemoteEngine | None = None
        self.error: str | None = None
        self.restarts = 0
        self.dropped_total = 0
        self.clock_shift_s = 0.0
        self._stats: LoopStats | None = None
        self._failed = False
        self._stopping = False
        self._relay: concurrent.futures.Future[None] | None = None

    # ------------------------------------------------------------------ DecodeLoop's shape

    def start(self) -> None:
        """Create the actor, open the source in it and start the relay (blocks; call it from
        a worker thread, as server sessions do).

        Raises
        ------
        RuntimeError
            If the source cannot be opened or a model does not fit (the actor's reason).
        """
        connect(self.settings)
        self._spawn()
        self._relay = asyncio.run_coroutine_threadsafe(self._run_relay(), self.event_loop)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the relay and the actor (closing its source); safe to call more than once."""
        self._stopping = True
        if self._relay is not None:
            self.event_loop.call_soon_threadsafe(self._relay.cancel)
        actor, self.actor = self.actor, None
        if actor is None:
            return
        with contextlib.suppress(Exception):  # a dead actor has nothing left to stop
            final = _get(actor.stop.remote(), timeout)
            if final is not None:
                self._take_stats(final)
        ray.kill(actor)

    @property
    def running(self) -> bool:
        """True while the actor decodes and the relay runs."""
        return (
            self.actor is not None
            and not self._failed
            and self._relay is not None
            and not self._relay.done()
        )

    def stats(self) -> LoopStats:
        """The actor's counters as last refreshed by the relay (every ``stats_interval_s``)."""
        base = self._stats or LoopStats(
            status="starting",
            n_decoded=0,
            n_skipped=0,
            decode_rate_hz=0.0,
            latency_p50_ms={},
            latency_p99_ms={},
            error=None,
            skipped_by_reason={},
            clock_ahead_ms=0.0,
        )
        if self._failed:
            return replace(base, status="failed", error=self.error)
        if self._stopping:
            return replace(base, status="stopped")
        return base

    # ------------------------------------------------------------------------ the actor

    def _spawn(self) -> None:
        actor = spawn_session_actor(
            self.settings,
            self.source_spec,
            self.model_ids,
            models_dir=self.models_dir,
            stride_s=self.stride_s,
            max_lag_s=self.max_lag_s,
            threads=self.threads,
        )
        try:
            reply = _get(actor.start.remote(), self.settings.start_timeout_s)
        except Exception:
            ray.kill(actor)
            raise
        if reply["error"] is not None:
            ray.kill(actor)
            raise RuntimeError(reply["error"])
        self.engine = RemoteEngine(reply["stream"])
        self.clock_shift_s = _clock_shift(actor)
        self.actor = actor

    def _take_stats(self, record: dict[str, Any]) -> None:
        self.dropped_total = int(record.pop("dropped_total", self.dropped_total))
        self._stats = stats_from_plain(record)

    async def _run_relay(self) -> None:
        s = self.settings
        next_stats = 0.0
        while not self._stopping:
            actor = self.actor
            if actor is None:
                return
            try:
                batch = await actor.next_results.remote(s.relay_batch, s.relay_wait_s)
                for record in batch["results"]:
                    try:
                        self.sink(result_from_plain(record, self.clock_shift_s))
                    except Exception:  # one bad delivery must not end the session's stream
                        logger.exception("Delivering a result failed")
                if time.monotonic() >= next_stats:
                    next_stats = time.monotonic() + s.stats_interval_s
                    self._take_stats(await actor.stats.remote())
            except RayActorError as exc:
                if self._stopping:
                    return
                if not await self._recover(exc):
                    return
                continue
            if batch["error"] and not batch["running"]:
                self.error = batch["error"]
                with contextlib.suppress(RayActorError):
                    self._take_stats(await actor.stats.remote())
                return

    async def _recover(self, exc: RayActorError) -> bool:
        """Re-create a dead actor when the policy allows; False when the session failed."""
        reason = _actor_reason(exc)
        s = self.settings
        if s.restart == "on_failure" and self.restarts < s.max_restarts:
            self.restarts += 1
            logger.warning(
                "Session actor died (%s); re-creating it (%d/%d)",
                reason,
                self.restarts,
                s.max_restarts,
            )
            try:
                await asyncio.to_thread(self._spawn)
                return True
            except Exception as err:
                reason = f"{reason}; re-creating it failed: {err}"
        self.error = reason
        self._failed = True
        self.actor = None
        logger.warning("Session failed: %s", reason)
        return False


def _get(ref: Any, timeout_s: float | None = None) -> Any:
    """``ray.get`` of one actor call's reply (its stubs type the reply as a list)."""
    return ray.get(ref, timeout=timeout_s)


def _actor_reason(exc: RayActorError) -> str:
    """Ray's reason for a dead actor, on one line (its message repeats the actor's details)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _clock_shift(actor: ActorHandle, pings: int = 3) -> float:
    """Seconds to add to the actor's local clock to get the gateway's.

    On the gateway's node both read the same monotonic clock, so the shift is 0; elsewhere it
    is estimated from the fastest of a few round trips (error at most half that trip).
    """
    if ray.get(actor.node_id.remote()) == ray.get_runtime_context().get_node_id():
        return 0.0
    best = (float("inf"), 0.0)
    for _ in range(pings):
        t0 = local_clock()
        remote = ray.get(actor.clock.remote())
        t1 = local_clock()
        best = min(best, (t1 - t0, (t0 + t1) / 2 - remote))
    return best[1]
