"""WebSocket protocol faults against a real server: junk gets an error or a close code, and
neither the server nor another subscriber notices."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_server_support import AUTH, SIM_SPEC, serve, ws_url
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from neurocast.wire.schemas import Subscribe

pytest_plugins = ["test_server_support"]
pytestmark = pytest.mark.timeout(90)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
bad_subscribes = st.fixed_dictionaries(
    {"type": st.just("subscribe")},
    optional={
        "outputs": st.one_of(st.integers(), st.text(max_size=10), st.lists(st.integers())),
        "decimate": st.one_of(st.text(max_size=5), st.floats(), st.integers(max_value=0)),
        "models": st.one_of(st.integers(), st.dictionaries(st.text(max_size=3), st.none())),
    },
).filter(lambda d: len(d) > 1)


def _invalid(message: str | bytes) -> bool:
    """True unless the server would take ``message`` as a valid subscription (pydantic's lax
    mode turns ``"decimate": "2"`` into 2, for example: that is not junk)."""
    try:
        Subscribe.model_validate_json(message)
    except ValueError:
        return True
    return False


junk = st.one_of(
    json_values.map(json.dumps),
    bad_subscribes.map(json.dumps),
    st.text(max_size=200),
    st.binary(min_size=1, max_size=200),
).filter(_invalid)


@pytest.fixture(scope="module")
def live(registry, model_ids) -> Iterator[dict[str, Any]]:
    """A server, one session and a bystander subscriber counting what it receives."""
    with serve(registry) as (server, client):
        session = client.create_session(SIM_SPEC, [model_ids["classifier"]])
        assert session.status == "running", session.error
        received = {"n": 0}
        stop = threading.Event()
        ws = connect(ws_url(server, session.id), additional_headers=AUTH, max_size=None)
        ws.send(json.dumps({"type": "subscribe", "outputs": ["probabilities"]}))

        def read() -> None:
            while not stop.is_set():
                try:
                    ws.recv(timeout=1)
                    received["n"] += 1
                except TimeoutError:
                    continue
                except ConnectionClosed:
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        yield {"server": server, "client": client, "session": session, "received": received}
        stop.set()
        ws.close()
        reader.join(5)
        client.delete_session(session.id)


def _open(live: dict[str, Any]) -> ClientConnection:
    return connect(
        ws_url(live["server"], live["session"].id), additional_headers=AUTH, max_size=None
    )


def _answer(ws: ClientConnection) -> dict[str, Any] | int:
    """The first message as JSON, or the close code when the server closed instead."""
    try:
        return json.loads(ws.recv(timeout=10))
    except ConnectionClosed as exc:
        assert exc.rcvd is not None, "closed without a close frame"
        return exc.rcvd.code


def _bystander_still_served(live: dict[str, Any]) -> None:
    before = live["received"]["n"]
    deadline = 10.0
    t0 = time.monotonic()
    while live["received"]["n"] <= before:
        assert time.monotonic() - t0 < deadline, "the other subscriber stopped receiving"
        time.sleep(0.02)
    r = httpx.get(f"{live['server'].url}/v1/sessions/{live['session'].id}", headers=AUTH)
    assert r.status_code == 200 and r.json()["status"] == "running"


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(message=junk)
def test_junk_first_message_gets_an_error_then_a_close(live, message: str | bytes) -> None:
    with _open(live) as ws:
        ws.send(message)
        answer = _answer(ws)
        if isinstance(answer, dict) and answer["type"] == "subscribed":
            return  # the draw was a valid subscription after all (e.g. empty outputs)
        if isinstance(answer, dict):
            assert answer["type"] == "error" and answer["code"] == "bad_message"
            assert answer["detail"]
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        else:
            assert answer == 1008


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(message=junk)
def test_junk_after_subscribing_gets_an_error_and_the_stream_goes_on(live, message) -> None:
    with _open(live) as ws:
        ws.send(json.dumps({"type": "subscribe", "outputs": ["status"]}))
        assert json.loads(ws.recv(timeout=10))["type"] == "subscribed"
        ws.send(message)
        while (answer := json.loads(ws.recv(timeout=10)))["type"] != "error":
            assert answer["type"] in ("status", "subscribed")
        assert answer["code"] == "bad_message"
        # still subscribed: a valid re-subscription is acknowledged on the same connection
        ws.send(json.dumps({"type": "subscribe", "outputs": ["status"]}))
        while (answer := json.loads(ws.recv(timeout=10)))["type"] != "subscribed":
            assert answer["type"] in ("status", "error")


def test_huge_message_is_refused_with_a_close_code(live) -> None:
    with _open(live) as ws:
        ws.send("x" * (16 * 1024 * 1024))
        answer = _answer(ws)
        if isinstance(answer, dict):
            assert answer["type"] == "error"
        else:
            assert answer in (1008, 1009)
    _bystander_still_served(live)


def test_burst_of_subscribe_messages_is_acknowledged_and_harmless(live) -> None:
    with _open(live) as ws:
        for k in range(300):
            ws.send(json.dumps({"type": "subscribe", "outputs": ["status"], "decimate": 1 + k % 3}))
        acks = 0
        while acks < 1:
            if json.loads(ws.recv(timeout=10))["type"] == "subscribed":
                acks += 1
    _bystander_still_served(live)


def test_server_and_bystander_survive_the_campaign(live) -> None:
    _bystander_still_served(live)
