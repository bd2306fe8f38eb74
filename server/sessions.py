"""Live decoding sessions: a source, some models, a DecodeLoop and a WebSocket hub each.

Opening a source can block (an LSL resolve waits for its timeout, a FieldTrip server may not
answer), so sessions open and stop in worker threads and the event loop never waits on a device.
A session whose source cannot be opened, or whose models do not fit the stream, ends in the
``failed`` state with the reason in ``error``; it stays listed until deleted.

Each session's definition is written to the state directory when it is created and removed
when it is deleted; at startup the sessions of the previous run are started again from their
definitions (``NEUROCAST_RESTORE_SESSIONS``), keeping their ids, with the first results marked
(see :mod:`neurocast.server.continuity`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from neurocast.server.config import Settings
from neurocast.server.continuity import (
    RestartMark,
    StallWatch,
    public_source_id,
    public_text,
)
from neurocast.server.exceptions import InvalidInput, LimitReached, NotFound
from neurocast.server.hub import Hub, Outgoing
from neurocast.server.metrics import Metrics
from neurocast.server.registry import ModelRegistry
from neurocast.server.signal_tap import SignalTap, session_channels
from neurocast.server.store import StateStore
from neurocast.streaming.engine.loop import DecodeLoop
from neurocast.streaming.engine.pipeline import DecodeEngine, WindowModel
from neurocast.streaming.engine.results import Result
from neurocast.streaming.recording.tap import RecordingSource
from neurocast.streaming.sources.open import open_source
from neurocast.streaming.sources.specs import SimulatorSpec, SourceSpec
from neurocast.wire.records import dumps

if TYPE_CHECKING:
    from neurocast.server.cluster.remote import RemoteLoop
    from neurocast.server.cluster.settings import ClusterSettings
from neurocast.wire.schemas import (
    Percentiles,
    SessionChannels,
    SessionCreate,
    SessionState,
    SessionStatus,
    StreamSummary,
)

logger = logging.getLogger(__name__)

_STAGE_KEYS = {
    "acquisition": "acquisition_ms",
    "preprocessing": "preprocessing_ms",
    "inference": "inference_ms",
    "total": "total_ms",
}


class Session:
    """One live decoding session.

    Parameters
    ----------
    request : SessionCreate
        What the client asked for.
    source_spec : SourceSpec
        The spec actually opened (paths resolved under the data root).
    models : list of WindowModel
        The decoders, already loaded.
    hub : Hub
        Fan-out to WebSocket clients.
    settings : Settings | None
        Where the data root (for ``source_id``) and the time after which a silent source is
        reported come from (None: the defaults, no data root).
    restarted : bool
        The session starts again after a server restart: its results carry the
        ``restarted`` issue until subscribers have seen it (see :class:`RestartMark`).
    cluster : ClusterSettings | None
        Decode in a Ray actor placed by the cluster (``models`` is then empty: the actor loads
        them) instead of in this process. Recording and the raw-signal view need the stream in
        this process and are not offered then.
    """

    def __init__(
        self,
        request: SessionCreate,
        source_spec: SourceSpec,
        models: list[WindowModel],
        hub: Hub,
        settings: Settings | None = None,
        restarted: bool = False,
        cluster: ClusterSettings | None = None,
    ) -> None:
        self.id = hub.session_id
        self.request = request
        self.created_at = time.time()
        self.hub = hub
        self.data_root = settings.data_root if settings is not None else None
        lost_after_s = settings.source_lost_after_s if settings is not None else 10.0
        self.stall = StallWatch(request.source, lost_after_s)
        sink: Callable[[Result], None] = hub.publish_threadsafe
        if restarted:
            sink = RestartMark(sink, lambda: bool(hub.subscribers))
        self.recording: RecordingSource | None = None
        self.loop: DecodeLoop | RemoteLoop
        if cluster is not None:
            self.loop = _remote_loop(request, source_spec, sink, hub, settings, cluster)
            self._state: SessionState = "starting"
            self._error: str | None = None
            self.start_task: asyncio.Task[None] | None = None
            return
        # chunks and results reach a recorder while one is attached (POST .../recording)
        self.recording = RecordingSource(open_source(source_spec))
        self.loop = DecodeLoop(
            self.recording,
            models,
            self.recording.results_to(SignalTap(self._engine, hub.wants_signal, sink)),
            stride_s=request.stride_s,
            max_lag_s=request.max_lag_ms / 1e3,
        )
        self._state = "starting"
        self._error = None
        self.start_task = None

    async def start(self) -> None:
        """Open the source and start decoding (in a worker thread); never raises."""
        try:
            await asyncio.to_thread(self.loop.start)
        except Exception as exc:
            self._error = _reason(exc)
            self._state = "failed"
            logger.warning("Session %s failed to start: %s", self.id, self._error)
        else:
            if self._state == "stopped":  # deleted while the source was opening
                await asyncio.to_thread(self.loop.stop)
            else:
                self._state = "running"

    async def stop(self) -> None:
        """Stop decoding and close the source (in a worker thread); safe to call twice.

        A session still opening its source is stopped once the opening returns (an LSL
        resolve, for example, ends at its timeout).
        """
        previous = self._state
        self._state = "stopped"
        if previous != "starting":
            await asyncio.to_thread(self.loop.stop)
        elif self.start_task is not None:
            await asyncio.shield(self.start_task)

    @property
    def simulated(self) -> bool:
        """True when the stream is simulated (known from the spec before the source opens)."""
        if isinstance(self.request.source, SimulatorSpec):
            return True
        return self.loop.engine is not None and self.loop.engine.stream.simulated

    def state(self) -> tuple[SessionState, str | None]:
        """The session's state and why it failed, or why it has been stalled this long."""
        if self._state == "running":
            stats = self.loop.stats()
            state: SessionState = "running" if stats.status == "starting" else stats.status
            lost = self.stall.update(state == "stalled")
            return state, stats.error if state == "failed" else lost
        return self._state, self._error

    def _engine(self) -> DecodeEngine | None:
        return self.loop.engine if isinstance(self.loop, DecodeLoop) else None

    def channels(self) -> SessionChannels | None:
        """The stream's channels with their positions; None until the source is open."""
        if self.loop.engine is None:
            return None
        return session_channels(self.id, self.loop.engine.stream)

    def status(self) -> SessionStatus:
        """Current state, counters and latency percentiles."""
        stats = self.loop.stats() if self.loop.engine is not None else None
        state, error = self.state()
        error = public_text(error, self.data_root)
        latency = {}
        if stats is not None:
            for stage, key in _STAGE_KEYS.items():
                if key in stats.latency_p50_ms:
                    latency[stage] = Percentiles(
                        p50_ms=stats.latency_p50_ms[key], p99_ms=stats.latency_p99_ms[key]
                    )
        for stage, values in (("delivery", self.hub.delivery_ms), ("end_to_end", self.hub.e2e_ms)):
            if values:
                p50, p99 = np.percentile(np.fromiter(values, float), [50, 99])
                latency[stage] = Percentiles(p50_ms=float(p50), p99_ms=float(p99))
        stream = None
        if self.loop.engine is not None:
            info = self.loop.engine.stream
            stream = StreamSummary(
                name=info.name,
                source_id=public_source_id(info.source_id, self.data_root),
                n_channels=info.n_channels,
                sfreq_hz=info.sfreq,
                simulated=info.simulated,
            )
        return SessionStatus(
            id=self.id,
            name=self.request.name,
            status=state,
            error=error,
            source=self.request.source,
            models=list(self.request.models),
            simulated=self.simulated,
            stream=stream,
            created_at=self.created_at,
            stride_s=self.request.stride_s,
            max_lag_ms=self.request.max_lag_ms,
            n_decoded=stats.n_decoded if stats else 0,
            n_skipped=stats.n_skipped if stats else 0,
            skipped_by_reason=stats.skipped_by_reason if stats else {},
            clock_ahead_ms=stats.clock_ahead_ms if stats else 0.0,
            decode_rate_hz=stats.decode_rate_hz if stats else 0.0,
            latency=latency,
            subscribers=len(self.hub.subscribers),
            dropped_messages=self.hub.total_dropped,
        )


def _remote_loop(
    request: SessionCreate,
    source_spec: SourceSpec,
    sink: Callable[[Result], None],
    hub: Hub,
    settings: Settings | None,
    cluster: ClusterSettings,
) -> RemoteLoop:
    """A session's decoding in a Ray actor, its results relayed to ``sink`` on the event loop."""
    from neurocast.server.cluster.remote import RemoteLoop  # Ray only when asked for

    publish = hub.publish if sink is hub.publish_threadsafe else sink
    return RemoteLoop(
        source_spec,
        request.models,
        publish,
        loop=hub.loop,
        settings=cluster,
        stride_s=request.stride_s,
        max_lag_s=request.max_lag_ms / 1e3,
        models_dir=settings.models_dir if settings is not None else None,
        threads=settings.threads if settings is not None else None,
    )


def _unknown(session_id: str) -> NotFound:
    return NotFound.unknown("session", session_id, "/v1/sessions")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class SessionManager:
    """Creates, lists and stops sessions, and sends their periodic status to subscribers.

    Parameters
    ----------
    settings : Settings
        Limits (sessions, queue size, status period).
    registry : ModelRegistry
        Where model ids are looked up.
    metrics : Metrics
        Where results, deliveries and drops are counted.
    store : StateStore | None
        Where session definitions are written, and read back by :meth:`restore`.
    """

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        metrics: Metrics,
        store: StateStore | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self.store = store
        self._reserved = 0  # creates past the limit check whose models are still loading
        self.cluster: ClusterSettings | None = None
        if settings.ray:
            from neurocast.server.cluster.settings import ClusterSettings  # Ray only when asked

            self.cluster = ClusterSettings()
        self._sessions: dict[str, Session] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._last_state: dict[str, SessionState] = {}

    async def _load_models(self, request: SessionCreate) -> list[WindowModel]:
        if self.cluster is not None:  # the session's actor loads them where Ray places it
            self.registry.check_ids(request.models)
            return []
        # the first use of a model loads (and warms up) its ONNX session: off the event loop
        return await asyncio.to_thread(self.registry.window_models, request.models)

    def __len__(self) -> int:
        """Sessions that exist now, running or not."""
        return len(self._sessions)

    def statuses(self) -> list[SessionStatus]:
        """Status of every session."""
        return [s.status() for s in list(self._sessions.values())]

    def get(self, session_id: str) -> Session:
        """The session with this id.

        Raises
        ------
        NotFound
            When there is none.
        """
        session = self._sessions.get(session_id)
        if session is None:
            raise _unknown(session_id)
        return session

    async def create(
        self,
        request: SessionCreate,
        source: SourceSpec,
        *,
        restored: tuple[str, float] | None = None,
    ) -> Session:
        """Start a session and wait briefly for its source to open.

        Parameters
        ----------
        request : SessionCreate
            What the client asked for (shown in the session's status).
        source : SourceSpec
            The source to open: the request's, with its file paths already checked.
        restored : tuple of (str, float) | None
            Id and creation time of a session of the previous run to start again (its
            results are then marked ``restarted``; nothing waits for its source).

        Raises
        ------
        InvalidInput
            For an unknown model or a source this installation cannot build.
        LimitReached
            When the session limit is reached.
        """
        if len(self._sessions) + self._reserved >= self.settings.max_sessions:
            raise LimitReached(
                "too_many_sessions",
                f"This server runs at most {self.settings.max_sessions} sessions; delete one "
                f"(DELETE /v1/sessions/{{id}}) or raise NEUROCAST_MAX_SESSIONS.",
            )
        # the slot is held while the models load, so that creates arriving together cannot
        # all pass the check above
        self._reserved += 1
        try:
            models = await self._load_models(request)
        finally:
            self._reserved -= 1
        loop = asyncio.get_running_loop()
        session_id = restored[0] if restored else uuid.uuid4().hex[:12]
        hub = Hub(
            session_id,
            loop,
            self.settings.ws_queue_size,
            on_result=lambda r: self.metrics.observe_result(session_id, r),
            on_delivery=lambda s: self.metrics.observe_delivery(session_id, s),
            on_dropped=lambda n: self.metrics.observe_dropped(session_id, n),
            idle_timeout_s=self.settings.ws_idle_timeout_s,
        )
        try:
            session = Session(
                request,
                source,
                models,
                hub,
                self.settings,
                restored is not None,
                cluster=self.cluster,
            )
        except Exception as exc:  # the source type is not available in this installation
            raise InvalidInput("bad_source", f"Cannot build the source: {exc}") from exc
        if restored is not None:
            session.created_at = restored[1]
        self._sessions[session_id] = session
        self._save(session)
        self._ensure_ticker()
        session.start_task = asyncio.create_task(session.start())
        if restored is not None:
            return session
        # still opening after the wait: the client polls GET /v1/sessions/{id}
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.shield(session.start_task), self.settings.session_open_wait_s
            )
        return session

    async def delete(self, session_id: str) -> SessionStatus:
        """Stop a session, tell its subscribers and forget it.

        Only the first of several concurrent deletes of one session succeeds; the others get
        :class:`NotFound` because the session is removed before it is stopped.
        """
        session = self._sessions.pop(session_id, None)
        if session is None:
            raise _unknown(session_id)
        if self.store is not None:
            self.store.forget_session(session_id)
        await self._stop(session)
        return session.status()

    async def _stop(self, session: Session, close_code: int = 1000) -> None:
        await session.stop()
        final = session.status()
        session.hub.close(
            Outgoing(dumps({"type": "status", "session": final.model_dump(mode="json")})),
            close_code,
        )
        self._last_state.pop(session.id, None)
        self.metrics.forget_session(session.id)

    def _save(self, session: Session) -> None:
        if self.store is None:
            return
        definition = {
            "id": session.id,
            "created_at": session.created_at,
            "request": session.request.model_dump(mode="json"),
        }
        try:
            self.store.save_session(session.id, definition)
        except OSError as exc:  # the session runs anyway; it will not survive a restart
            logger.warning("Could not save session %s: %s", session.id, exc)

    async def restore(self, resolve: Callable[[SourceSpec], SourceSpec]) -> None:
        """Start again the sessions saved by the previous run (without waiting for them).

        Parameters
        ----------
        resolve : callable
            Checks a saved source's file paths against the data root, as for a new request;
            raises when they no longer pass. A session that cannot be started again (its
            model or file is gone, the limit is lower) is logged and its definition removed.
        """
        if self.store is None:
            return
        for record in self.store.load_sessions():
            session_id = str(record["id"])
            try:
                request = SessionCreate.model_validate(record["request"])
                created_at = float(record.get("created_at", time.time()))
                await self.create(
                    request, resolve(request.source), restored=(session_id, created_at)
                )
            except Exception as exc:
                logger.warning("Session %s of the previous run not restarted: %s", session_id, exc)
                self.store.forget_session(session_id)
            else:
                logger.info("Session %s of the previous run started again", session_id)

    async def shutdown(self, close_code: int = 1012, wait_s: float = 2.0) -> None:
        """Stop every session (the server is going down); their definitions are kept.

        Each subscriber gets the final ``status`` and then a close with ``close_code``
        (1012, service restart); this waits up to ``wait_s`` for them to go.
        """
        if self._ticker is not None:
            self._ticker.cancel()
        sessions = list(self._sessions.values())
        self._sessions.clear()
        await asyncio.gather(*(self._stop(s, close_code) for s in sessions), return_exceptions=True)
        await asyncio.gather(*(s.hub.wait_closed(wait_s) for s in sessions))

    def _ensure_ticker(self) -> None:
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.create_task(self._tick())

    async def _tick(self) -> None:
        """Send each session's status periodically and as soon as its state changes."""
        period = self.settings.status_interval_s
        step = min(period, 0.25)
        elapsed = 0.0
        while True:
            await asyncio.sleep(step)
            elapsed += step
            periodic = elapsed >= period
            if periodic:
                elapsed = 0.0
            for session in list(self._sessions.values()):
                state, _ = session.state()  # also times a stalled source without subscribers
                if not session.hub.subscribers:
                    continue
                changed = self._last_state.get(session.id) != state
                self._last_state[session.id] = state
                if periodic or changed:
                    session.hub.publish_status(session.status())
