"""WebSocket fan-out of one session's results with a bounded queue per client.

The decode thread hands each result to the event loop with ``call_soon_threadsafe`` and
returns at once. On the loop, the result is encoded once (JSON text, or a binary frame for
signal payloads) and appended to the queue of every client that subscribed to it. A queue that
is full drops its oldest message and counts it; the client's sender task reports the count in a
``dropped`` message before its next message. A client that reads slowly, or not at all, only
ever fills its own queue: the decoder and the other clients never wait for it. A client whose
connection accepts nothing for ``idle_timeout_s`` while messages wait for it is given up: it
is sent a last ``dropped`` report and closed with :data:`IDLE_CLOSE_CODE`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from starlette.websockets import WebSocket

from neurocast.streaming.engine.results import Result
from neurocast.streaming.sources.base import local_clock
from neurocast.wire.frames import encode_signal_frame
from neurocast.wire.records import dumps, marker_records, result_message_json
from neurocast.wire.schemas import DroppedMessage, SessionStatus, StatusMessage, Subscribe

logger = logging.getLogger(__name__)

# payload kinds that carry a channels × samples array and go out as binary frames
SIGNAL_KINDS = frozenset({"translation", "signal"})


@dataclass(frozen=True)
class Outgoing:
    """One encoded message, the time its result was ready and the time of its window's last
    sample (both on the local clock, seconds; the latter corrected by the clock offset)."""

    data: str | bytes
    ready_time: float | None = None
    sample_time: float | None = None


_CLOSE = Outgoing("")  # sentinel: the sender closes the connection after the queue drains
#: Close code for a client that accepted nothing for the idle limit (policy violation).
IDLE_CLOSE_CODE = 1008
# how long a given-up client still has to take its last messages and the close frame
_CLOSE_GRACE_S = 10.0


class Subscriber:
    """One WebSocket client: what it wants, its bounded queue and its drop count.

    Parameters
    ----------
    subscription : Subscribe
        Outputs, decimation and models the client asked for.
    maxsize : int
        Messages queued before the oldest is dropped.
    """

    def __init__(self, subscription: Subscribe, maxsize: int) -> None:
        self.subscription = subscription
        self.maxsize = maxsize
        self.queue: deque[Outgoing] = deque()
        self.wakeup = asyncio.Event()
        self.dropped = 0
        self.reported_dropped = 0
        self.closing = False
        self.close_code = 1000
        self._seen: dict[str, int] = {}

    def update(self, subscription: Subscribe) -> None:
        """Change what the client receives (its queue and drop count stay)."""
        self.subscription = subscription
        self._seen.clear()

    def wants(self, output: str) -> bool:
        """True when the client subscribed to ``output`` (a result kind, events or status)."""
        return output in self.subscription.outputs

    def wants_result(self, result: Result) -> bool:
        """True when this result passes the client's output, model and decimation filters."""
        sub = self.subscription
        if result.kind not in sub.outputs:
            return False
        if result.kind == "signal":
            # each signal result holds only the samples since the previous one: never thinned
            return True
        if sub.models is not None and result.model not in sub.models:
            return False
        n = self._seen.get(result.model, 0)
        self._seen[result.model] = n + 1
        return n % sub.decimate == 0

    def offer(self, message: Outgoing) -> int:
        """Queue a message, dropping the oldest when full; returns how many were dropped."""
        if self.closing:
            return 0
        dropped = 0
        if len(self.queue) >= self.maxsize:
            self.queue.popleft()
            self.dropped += 1
            dropped = 1
        self.queue.append(message)
        self.wakeup.set()
        return dropped

    def close(self, final: Outgoing | None = None, code: int = 1000) -> None:
        """Send ``final`` (if any) after what is queued, then close the connection with
        ``code``."""
        if self.closing:
            return
        self.close_code = code
        if final is not None:
            self.queue.append(final)
        self.queue.append(_CLOSE)
        self.closing = True
        self.wakeup.set()


class Hub:
    """Fan-out of one session's results, events and status to its subscribers.

    Parameters
    ----------
    session_id : str
        The session whose results this hub delivers.
    loop : asyncio.AbstractEventLoop
        The event loop the WebSocket connections run on.
    queue_size : int
        Messages buffered per client.
    on_result : callable
        Called on the loop with every published result (metrics).
    on_delivery : callable
        Called with the delivery latency in seconds of every message written to a client.
    on_dropped : callable
        Called with the number of messages dropped each time a queue overflows.
    idle_timeout_s : float | None
        A client whose connection accepts nothing for this long is closed (None: never).
    """

    def __init__(
        self,
        session_id: str,
        loop: asyncio.AbstractEventLoop,
        queue_size: int,
        *,
        on_result: Callable[[Result], None],
        on_delivery: Callable[[float], None],
        on_dropped: Callable[[int], None],
        idle_timeout_s: float | None = None,
    ) -> None:
        self.session_id = session_id
        self.idle_timeout_s = idle_timeout_s
        self.loop = loop
        self.queue_size = queue_size
        self.subscribers: set[Subscriber] = set()
        self.total_dropped = 0
        self.delivery_ms: deque[float] = deque(maxlen=2000)
        self.e2e_ms: deque[float] = deque(maxlen=2000)
        self._on_result = on_result
        self._on_delivery = on_delivery
        self._on_dropped = on_dropped
        self._last_marker_t = -np.inf
        self.closed = False

    # ----------------------------------------------------------------------------- producers

    def publish_threadsafe(self, result: Result) -> None:
        """Hand a result from the decode thread to the loop; never blocks."""
        # a closed loop means the server is shutting down and the session with it
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.publish, result)

    def publish(self, result: Result) -> None:
        """Queue a result (and any new markers) for every subscriber that wants it."""
        if self.closed:
            return
        if result.kind != "signal":  # the stream itself is no decoding result
            self._on_result(result)
        if not self.subscribers:
            return
        message: Outgoing | None = None
        for sub in self.subscribers:
            if sub.wants_result(result):
                if message is None:
                    message = self._encode(result)
                self._offer(sub, message)
        new = [m for m in result.markers if m.timestamp > self._last_marker_t]
        if new:
            self._last_marker_t = max(m.timestamp for m in new)
            events = Outgoing(
                dumps(
                    {
                        "type": "events",
                        "session_id": self.session_id,
                        "simulated": result.simulated,
                        "events": marker_records(new),
                    }
                ),
                result.ready_time,
            )
            for sub in self.subscribers:
                if sub.wants("events"):
                    self._offer(sub, events)

    def wants_signal(self) -> bool:
        """True when some client subscribed to the ``signal`` output (any thread)."""
        # a copy: the set may change on the loop while the decode thread asks
        return any(s.wants("signal") for s in list(self.subscribers))

    def publish_status(self, status: SessionStatus) -> None:
        """Queue a status message for every subscriber that asked for status."""
        wanting = [s for s in self.subscribers if s.wants("status")]
        if wanting:
            message = Outgoing(StatusMessage(session=status).model_dump_json())
            for sub in wanting:
                self._offer(sub, message)

    def _encode(self, result: Result) -> Outgoing:
        sample_time = result.t_window_end + result.clock_offset
        if result.kind in SIGNAL_KINDS:
            data: str | bytes = encode_signal_frame(result, self.session_id)
        else:
            data = result_message_json(result, self.session_id)
        return Outgoing(data, result.ready_time, sample_time)

    def _offer(self, sub: Subscriber, message: Outgoing) -> None:
        dropped = sub.offer(message)
        if dropped:
            self.total_dropped += dropped
            self._on_dropped(dropped)

    # ----------------------------------------------------------------------------- consumers

    def add(self, subscription: Subscribe) -> Subscriber:
        """Register a client; it receives results from now on."""
        sub = Subscriber(subscription, self.queue_size)
        self.subscribers.add(sub)
        return sub

    def remove(self, sub: Subscriber) -> None:
        """Forget a client (its queue is discarded)."""
        self.subscribers.discard(sub)

    def close(self, final: Outgoing | None = None, code: int = 1000) -> None:
        """End every subscription: each client gets ``final``, then a close with ``code``
        (1000 when the session is deleted, 1012 when the server shuts down)."""
        self.closed = True
        for sub in list(self.subscribers):
            sub.close(final, code)

    async def wait_closed(self, timeout_s: float) -> None:
        """Return once every subscriber has gone, or after ``timeout_s`` seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self.subscribers:
                    await asyncio.sleep(0.02)

    async def pump(self, ws: WebSocket, sub: Subscriber) -> None:
        """Write a subscriber's queue to its WebSocket until closed or disconnected.

        Returns when the hub closes the subscription (after its close frame), when the client
        accepted nothing for ``idle_timeout_s`` (see :meth:`_give_up`) or when the connection
        fails; failures are not raised (the client went away).
        """
        try:
            while True:
                await sub.wakeup.wait()
                sub.wakeup.clear()
                while sub.queue:
                    if sub.dropped != sub.reported_dropped:
                        lost = sub.dropped - sub.reported_dropped
                        sub.reported_dropped = sub.dropped
                        report = DroppedMessage(dropped=lost, total_dropped=sub.dropped)
                        await self._send(ws, report.model_dump_json())
                    message = sub.queue.popleft()
                    if message is _CLOSE:
                        await ws.close(code=sub.close_code)
                        return
                    await self._send(ws, message.data)
                    if message.ready_time is not None:
                        now = local_clock()
                        seconds = now - message.ready_time
                        self.delivery_ms.append(seconds * 1e3)
                        self._on_delivery(seconds)
                        if message.sample_time is not None:
                            self.e2e_ms.append((now - message.sample_time) * 1e3)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            await self._give_up(ws, sub)
        except Exception as exc:  # the client disconnected (possibly mid-message)
            logger.debug("Subscriber of %s went away: %r", self.session_id, exc)

    async def _send(self, ws: WebSocket, data: str | bytes) -> None:
        # the server sends a frame only once the connection's buffer has room, so a send that
        # times out has written nothing and leaves no partial frame behind. asyncio.timeout
        # runs the send in this task: wait_for would start a task per message and per
        # client, each waiting a turn of the loop before its frame is written
        async with asyncio.timeout(self.idle_timeout_s):
            if isinstance(data, bytes):
                await ws.send_bytes(data)
            else:
                await ws.send_text(data)

    async def _give_up(self, ws: WebSocket, sub: Subscriber) -> None:
        """Close a client that accepted nothing for ``idle_timeout_s``.

        Its queue is discarded and counted as dropped; should it read again, it finds the
        messages already in flight, a ``dropped`` report and a close with
        :data:`IDLE_CLOSE_CODE`. It has :data:`_CLOSE_GRACE_S` to do so.
        """
        self.remove(sub)
        sub.closing = True
        lost = len(sub.queue)
        sub.queue.clear()
        if lost:
            sub.dropped += lost
            self.total_dropped += lost
            self._on_dropped(lost)
        report = DroppedMessage(
            dropped=sub.dropped - sub.reported_dropped, total_dropped=sub.dropped
        )
        logger.info(
            "Closing a subscriber of %s that accepted nothing for %g s (%d messages dropped)",
            self.session_id,
            self.idle_timeout_s,
            sub.dropped,
        )
        reason = f"accepted nothing for {self.idle_timeout_s:g} s"
        with contextlib.suppress(Exception):  # gone, or still not reading after the grace
            async with asyncio.timeout(_CLOSE_GRACE_S):
                await ws.send_text(report.model_dump_json())
                await ws.close(code=IDLE_CLOSE_CODE, reason=reason)
