"""WebSocket fan-out of one session's results with a bounded queue per client.

The decode thread hands each result to the event loop with ``call_soon_threadsafe`` and
returns at once. On the loop, the result is encoded once (JSON text, or a binary frame for
signal payloads) and appended to the queue of every client that subscribed to it. A queue that
is full drops its oldest message and counts it; the client's sender task reports the count in a
``dropped`` message before its next message. A client that reads slowly, or not at all, only
ever fills its own queue: the decoder and the other clients never wait for it.
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
SIGNAL_KINDS = frozenset({"translation"})


@dataclass(frozen=True)
class Outgoing:
    """One encoded message and the time its result was ready (local clock, seconds)."""

    data: str | bytes
    ready_time: float | None = None


_CLOSE = Outgoing("")  # sentinel: the sender closes the connection after the queue drains


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

    def close(self, final: Outgoing | None = None) -> None:
        """Send ``final`` (if any) after what is queued, then close the connection."""
        if self.closing:
            return
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
    ) -> None:
        self.session_id = session_id
        self.loop = loop
        self.queue_size = queue_size
        self.subscribers: set[Subscriber] = set()
        self.total_dropped = 0
        self.delivery_ms: deque[float] = deque(maxlen=2000)
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

    def publish_status(self, status: SessionStatus) -> None:
        """Queue a status message for every subscriber that asked for status."""
        wanting = [s for s in self.subscribers if s.wants("status")]
        if wanting:
            message = Outgoing(StatusMessage(session=status).model_dump_json())
            for sub in wanting:
                self._offer(sub, message)

    def _encode(self, result: Result) -> Outgoing:
        if result.kind in SIGNAL_KINDS:
            return Outgoing(encode_signal_frame(result, self.session_id), result.ready_time)
        return Outgoing(result_message_json(result, self.session_id), result.ready_time)

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

    def close(self, final: Outgoing | None = None) -> None:
        """End every subscription: each client gets ``final`` then a normal close."""
        self.closed = True
        for sub in list(self.subscribers):
            sub.close(final)

    async def pump(self, ws: WebSocket, sub: Subscriber) -> None:
        """Write a subscriber's queue to its WebSocket until closed or disconnected.

        Returns when the hub closes the subscription (after a normal close frame) or when the
        connection fails; failures are not raised (the client went away).
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
                        await ws.send_text(report.model_dump_json())
                    message = sub.queue.popleft()
                    if message is _CLOSE:
                        await ws.close(code=1000)
                        return
                    if isinstance(message.data, bytes):
                        await ws.send_bytes(message.data)
                    else:
                        await ws.send_text(message.data)
                    if message.ready_time is not None:
                        seconds = local_clock() - message.ready_time
                        self.delivery_ms.append(seconds * 1e3)
                        self._on_delivery(seconds)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the client disconnected (possibly mid-message)
            logger.debug("Subscriber of %s went away: %r", self.session_id, exc)
