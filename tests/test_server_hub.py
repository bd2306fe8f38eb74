"""The fan-out hub: bounded per-client queues, filters, events, thread hand-off."""

from __future__ import annotations

import asyncio
import json
import threading

import numpy as np
import pytest

from neurocast.server.hub import Hub, Outgoing, Subscriber
from neurocast.streaming.engine.results import Result
from neurocast.streaming.sources.base import Marker
from neurocast.wire.frames import decode_signal_frame
from neurocast.wire.schemas import Subscribe


def _result(end: int, model: str = "clf", kind: str = "probabilities", markers=()) -> Result:
    if kind == "translation":
        payload = {"ch_names": ["A", "B"], "sfreq_hz": 100.0, "signal": np.ones((2, 3), "f4")}
    else:
        payload = {"classes": ["a", "b"], "probabilities": np.array([0.25, 0.75], "f4")}
    return Result(kind, model, end, end / 1000, payload, markers=list(markers), ready_time=1.0)


def _hub(loop: asyncio.AbstractEventLoop, queue_size: int = 4) -> tuple[Hub, list]:
    seen: list = []
    hub = Hub(
        "s1",
        loop,
        queue_size,
        on_result=seen.append,
        on_delivery=lambda s: None,
        on_dropped=lambda n: seen.append(("dropped", n)),
    )
    return hub, seen


def test_full_queue_drops_oldest_and_counts() -> None:
    sub = Subscriber(Subscribe(), maxsize=3)
    for i in range(5):
        sub.offer(Outgoing(str(i)))
    assert [m.data for m in sub.queue] == ["2", "3", "4"]
    assert sub.dropped == 2


async def test_publish_filters_by_output_model_and_decimation() -> None:
    hub, seen = _hub(asyncio.get_running_loop(), queue_size=100)
    probs_only = hub.add(Subscribe(outputs=["probabilities"]))
    other_model = hub.add(Subscribe(models=["other"]))
    every_third = hub.add(Subscribe(outputs=["probabilities"], decimate=3))
    for end in range(0, 250, 25):
        hub.publish(_result(end))
    assert len(seen) == 10  # every result is counted, subscribed or not
    assert len(probs_only.queue) == 10
    assert len(other_model.queue) == 0
    ends = [json.loads(m.data)["window_end"] for m in every_third.queue]
    assert ends == [0, 75, 150, 225]
    first = json.loads(probs_only.queue[0].data)
    assert first["type"] == "result" and first["payload"] == {
        "classes": ["a", "b"],
        "probabilities": [0.25, 0.75],
    }


async def test_slow_subscriber_loses_only_its_own_messages() -> None:
    hub, seen = _hub(asyncio.get_running_loop(), queue_size=4)
    slow = hub.add(Subscribe())
    fast = hub.add(Subscribe())
    for end in range(10):
        hub.publish(_result(end))
        fast.queue.clear()  # a client that keeps up
    assert slow.dropped == 6 and fast.dropped == 0
    assert hub.total_dropped == 6
    assert ("dropped", 1) in seen
    assert [json.loads(m.data)["window_end"] for m in slow.queue] == [6, 7, 8, 9]


async def test_signal_results_go_out_as_binary_frames() -> None:
    hub, _ = _hub(asyncio.get_running_loop())
    sub = hub.add(Subscribe(outputs=["translation"]))
    hub.publish(_result(25, model="tr", kind="translation"))
    frame = decode_signal_frame(sub.queue[0].data)
    assert frame.meta["model"] == "tr" and frame.data.shape == (2, 3)


async def test_markers_become_events_once() -> None:
    hub, _ = _hub(asyncio.get_running_loop())
    sub = hub.add(Subscribe(outputs=["events"]))
    m1, m2 = Marker(0.01, "image/1"), Marker(0.04, "class/rest")
    hub.publish(_result(25, markers=[m1]))
    hub.publish(_result(50, markers=[m1, m2]))  # overlapping windows repeat markers
    events = [e["value"] for m in sub.queue for e in json.loads(m.data)["events"]]
    assert events == ["image/1", "class/rest"]


async def test_results_from_a_thread_reach_the_loop() -> None:
    hub, _ = _hub(asyncio.get_running_loop())
    sub = hub.add(Subscribe(outputs=["probabilities"]))
    thread = threading.Thread(target=lambda: [hub.publish_threadsafe(_result(e)) for e in (1, 2)])
    thread.start()
    thread.join()
    for _ in range(50):
        if len(sub.queue) == 2:
            break
        await asyncio.sleep(0.01)
    assert [json.loads(m.data)["window_end"] for m in sub.queue] == [1, 2]


async def test_closed_hub_ignores_results_and_ends_subscriptions() -> None:
    hub, seen = _hub(asyncio.get_running_loop())
    sub = hub.add(Subscribe())
    hub.close(Outgoing('{"type": "status"}'))
    hub.publish(_result(1))
    assert not seen
    assert sub.closing and sub.queue[0].data == '{"type": "status"}'
    assert sub.offer(Outgoing("late")) == 0 and len(sub.queue) == 2


def test_publish_after_the_loop_closed_does_not_raise() -> None:
    loop = asyncio.new_event_loop()
    hub, _ = _hub(loop)
    loop.close()
    hub.publish_threadsafe(_result(1))  # the decode thread must never crash on shutdown


@pytest.mark.parametrize("decimate", [0, -1])
def test_decimation_must_be_positive(decimate: int) -> None:
    with pytest.raises(ValueError):
        Subscribe(decimate=decimate)
