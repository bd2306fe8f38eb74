"""REST API of the real service under uvicorn: models, sessions, health, metrics, auth, errors."""

from __future__ import annotations

import socket
import threading
from functools import partial
from pathlib import Path

import httpx
import pytest
from test_server_support import AUTH, SIM_SPEC, TOKEN, serve, server_fixture, wait_until

from neurocast.clients.calls import NeurocastError
from neurocast.clients.client import Client

pytest_plugins = ["test_server_support"]
pytestmark = pytest.mark.timeout(120)

running = server_fixture(max_sessions=3, session_open_wait_s=15.0)


def _decoded(client: Client, session_id: str) -> bool:
    return client.session(session_id).n_decoded > 5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_health_is_open_and_everything_else_needs_the_token(running) -> None:
    server, _ = running
    health = httpx.get(server.url + "/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert health.json()["auth"] is True
    for path in ("/v1/models", "/v1/sessions", "/v1/jobs", "/metrics"):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            r = httpx.get(server.url + path, headers=headers)
            assert r.status_code == 401, (path, headers)
            assert r.json()["code"] == "unauthorized"
            assert r.headers["www-authenticate"] == "Bearer"
        assert httpx.get(server.url + path, headers=AUTH).status_code == 200


def test_models_are_listed_with_metadata(running, model_ids) -> None:
    _, client = running
    models = {m.id: m for m in client.models()}
    assert set(model_ids.values()) <= set(models)
    clf = client.model(model_ids["classifier"])
    assert clf.kind == "probabilities" and clf.input.window_s > 0
    with pytest.raises(NeurocastError) as err:
        client.model("no-such-model")
    assert err.value.status_code == 404 and err.value.code == "unknown_model"


def test_session_lifecycle(running, model_ids) -> None:
    _, client = running
    created = client.create_session(SIM_SPEC, [model_ids["classifier"]], name="lifecycle")
    assert created.status == "running", created.error
    assert created.simulated and created.stream is not None and created.stream.simulated
    status = wait_until(
        lambda: (s := client.session(created.id)).n_decoded >= 10 and s, what="decoding"
    )
    assert status.decode_rate_hz > 0
    assert {"acquisition", "preprocessing", "inference", "total"} <= set(status.latency)
    assert all(p.p99_ms >= p.p50_ms >= 0 for p in status.latency.values())
    assert created.id in {s.id for s in client.sessions()}
    final = client.delete_session(created.id)
    assert final.status == "stopped"
    with pytest.raises(NeurocastError) as err:
        client.session(created.id)
    assert err.value.status_code == 404


def test_several_sessions_at_once(running, model_ids) -> None:
    _, client = running
    ids = [
        client.create_session(SIM_SPEC.model_copy(update={"seed": s}), [model_ids["classifier"]]).id
        for s in (1, 2)
    ]
    try:
        for sid in ids:
            wait_until(partial(_decoded, client, sid), what="both sessions decoding")
        assert all(client.session(sid).status == "running" for sid in ids)
    finally:
        for sid in ids:
            client.delete_session(sid)


def test_unknown_model_is_a_422(running) -> None:
    server, _ = running
    r = httpx.post(
        server.url + "/v1/sessions",
        json={"source": SIM_SPEC.model_dump(), "models": ["nope"]},
        headers=AUTH,
    )
    assert r.status_code == 422 and r.json()["code"] == "unknown_model"
    assert "GET /v1/models" in r.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"source": {"kind": "teleport"}, "models": ["x"]},
        {"source": {"kind": "simulator"}, "models": []},
        {"source": {"kind": "simulator", "sfreq": -1}, "models": ["x"]},
        {"source": {"kind": "simulator"}, "models": ["x"], "stride_s": 0},
        {"source": {"kind": "lsl"}, "models": ["x"]},
    ],
)
def test_invalid_session_requests_are_422(running, body) -> None:
    server, _ = running
    r = httpx.post(server.url + "/v1/sessions", json=body, headers=AUTH)
    assert r.status_code == 422
    assert r.json()["detail"]


def test_malformed_json_is_a_4xx(running) -> None:
    server, _ = running
    r = httpx.post(
        server.url + "/v1/sessions",
        content=b"{not json",
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert r.status_code == 422


def test_unreachable_source_fails_with_the_reason(running, model_ids) -> None:
    _, client = running
    port = _free_port()  # nothing listens there
    session = client.create_session(
        {"kind": "fieldtrip", "host": "127.0.0.1", "port": port, "open_timeout_s": 0.5},
        [model_ids["classifier"]],
    )
    try:
        assert session.status == "failed"
        assert session.error and f"127.0.0.1:{port}" in session.error
        again = client.session(session.id)  # the failed session stays listed, with its reason
        assert again.status == "failed" and again.error == session.error
    finally:
        client.delete_session(session.id)


def test_replay_paths_are_confined_to_the_data_root(registry, model_ids, tmp_path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (tmp_path / "outside_raw.fif").write_bytes(b"x")
    with serve(registry, data_root=root) as (_, client):
        for path, status, code in [
            ("../outside_raw.fif", 403, "path_outside_data_root"),
            (str(tmp_path / "outside_raw.fif"), 403, "path_outside_data_root"),
            ("missing_raw.fif", 404, "file_not_found"),
        ]:
            with pytest.raises(NeurocastError) as err:
                client.create_session({"kind": "replay", "path": path}, [model_ids["classifier"]])
            assert (err.value.status_code, err.value.code) == (status, code)
    with serve(registry) as (_, client), pytest.raises(NeurocastError) as err:
        client.create_session({"kind": "replay", "path": "x_raw.fif"}, [model_ids["classifier"]])
    assert err.value.code == "path_access_disabled"


def test_unreadable_replay_file_fails_the_session(registry, model_ids, tmp_path) -> None:
    (tmp_path / "broken_raw.fif").write_bytes(b"not a recording" * 10)
    with serve(registry, data_root=tmp_path) as (_, client):
        session = client.create_session(
            {"kind": "replay", "path": "broken_raw.fif"}, [model_ids["classifier"]]
        )
        assert session.status == "failed" and "broken_raw.fif" in (session.error or "")


def test_model_that_does_not_fit_the_stream_fails_with_the_reason(running, model_ids) -> None:
    _, client = running
    meg_only = SIM_SPEC.model_copy(update={"modality": "meg"})  # the classifier reads EEG
    session = client.create_session(meg_only, [model_ids["classifier"]])
    try:
        assert session.status == "failed"
        # the reason names what the stream lacks, so the user knows what to change
        assert session.error is not None and "lacks" in session.error
        assert model_ids["classifier"] in session.error
    finally:
        client.delete_session(session.id)


def test_session_limit_is_a_429(registry, model_ids) -> None:
    with serve(registry, max_sessions=1) as (_, client):
        first = client.create_session(SIM_SPEC, [model_ids["classifier"]])
        with pytest.raises(NeurocastError) as err:
            client.create_session(SIM_SPEC, [model_ids["classifier"]])
        assert err.value.status_code == 429 and err.value.code == "too_many_sessions"
        client.delete_session(first.id)
        client.delete_session(client.create_session(SIM_SPEC, [model_ids["classifier"]]).id)


def test_two_clients_deleting_the_same_session(running, model_ids) -> None:
    server, client = running
    session = client.create_session(SIM_SPEC, [model_ids["classifier"]])
    barrier = threading.Barrier(2)
    codes: list[int] = []

    def delete() -> None:
        barrier.wait()
        codes.append(
            httpx.delete(f"{server.url}/v1/sessions/{session.id}", headers=AUTH).status_code
        )

    threads = [threading.Thread(target=delete) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(codes) == [200, 404]
    assert session.id not in {s.id for s in client.sessions()}


def test_metrics_report_per_session_and_model(running, model_ids) -> None:
    server, client = running
    session = client.create_session(SIM_SPEC, [model_ids["classifier"]])
    try:
        wait_until(lambda: client.session(session.id).n_decoded > 5, what="decoding")
        text = httpx.get(server.url + "/metrics", headers=AUTH).text
        labels = f'model="{model_ids["classifier"]}",session="{session.id}"'
        assert f"neurocast_windows_decoded_total{{{labels}}}" in text
        assert "neurocast_stage_latency_seconds_bucket" in text
        assert f'neurocast_decode_rate_hz{{session="{session.id}"}}' in text
        assert f'neurocast_session_state{{session="{session.id}",state="running"}} 1.0' in text
    finally:
        client.delete_session(session.id)
    text = httpx.get(server.url + "/metrics", headers=AUTH).text
    assert session.id not in text  # a deleted session's series are removed


def test_unknown_routes_and_methods_get_json_errors(running) -> None:
    server, _ = running
    r = httpx.get(server.url + "/v1/nothing", headers=AUTH)
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = httpx.put(server.url + "/v1/sessions", headers=AUTH)
    assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"


def test_cors_allows_only_configured_origins(registry) -> None:
    with serve(registry, cors_origins=["http://lab.example"]) as (server, _):
        preflight = {
            "Origin": "http://lab.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "Authorization",
        }
        ok = httpx.options(server.url + "/v1/sessions", headers=preflight)
        assert ok.headers.get("access-control-allow-origin") == "http://lab.example"
        bad = httpx.options(
            server.url + "/v1/sessions", headers={**preflight, "Origin": "http://evil.example"}
        )
        assert "access-control-allow-origin" not in bad.headers


def test_auth_off_only_on_loopback(registry) -> None:
    with serve(registry, auth=False, host="127.0.0.1") as (server, _):
        assert httpx.get(server.url + "/v1/sessions").status_code == 200


def test_dashboard_and_openapi_are_served(running) -> None:
    server, _ = running
    page = httpx.get(server.url + "/", follow_redirects=True)
    assert page.status_code == 200 and "neurocast dashboard" in page.text
    # the API's map follows the auth setting (NEUROCAST_DOCS=auth by default)
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert httpx.get(server.url + path).status_code == 401, path
        assert httpx.get(server.url + path, headers=AUTH).status_code == 200, path
    spec = httpx.get(server.url + "/openapi.json", headers=AUTH).json()
    for path in (
        "/v1/sessions",
        "/v1/sessions/{session_id}",
        "/v1/decode",
        "/v1/jobs/{job_id}",
        "/v1/models",
        "/health",
        "/metrics",
    ):
        assert path in spec["paths"], path
    post = spec["paths"]["/v1/sessions"]["post"]
    assert {"201", "401", "422", "429"} <= set(post["responses"])
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    # the WebSocket protocol's messages are published with the schema
    schemas = spec["components"]["schemas"]
    kinds = {ref["$ref"].rsplit("/", 1)[1] for ref in schemas["ServerMessage"]["oneOf"]}
    assert {"ResultMessage", "DroppedMessage", "StatusMessage", "Subscribed"} <= kinds
    assert "decimate" in schemas["Subscribe"]["properties"]


def test_settings_file_paths_must_exist(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from neurocast.server.config import Settings

    with pytest.raises(ValidationError):
        Settings(token=TOKEN, models_dir=tmp_path / "missing")


def test_retrieval_results_link_gallery_thumbnails(running, model_ids) -> None:
    server, client = running
    info = client.model(model_ids["retrieval"])
    assert info.kind == "retrieval" and info.gallery == "test-gallery"
    session = client.create_session(SIM_SPEC, [model_ids["retrieval"]])
    try:
        with client.stream(session.id, ["retrieval"]) as stream:
            stream.receive(timeout=10)  # subscribed
            result = stream.receive(timeout=10)
        topk = result.payload["topk"]
        assert len(topk) == 5 and topk[0]["score"] >= topk[-1]["score"]
        r = httpx.get(server.url + topk[0]["thumbnail_url"], headers=AUTH)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert r.content.startswith(b"\x89PNG")
        assert httpx.get(server.url + topk[0]["thumbnail_url"]).status_code == 401
    finally:
        client.delete_session(session.id)
    for path in ("/v1/galleries/test-gallery/thumbnails/nope", "/v1/galleries/nope/thumbnails/x"):
        r = httpx.get(server.url + path, headers=AUTH)
        assert r.status_code == 404 and r.json()["code"] == "unknown_image"


def test_delete_while_the_source_is_still_opening(registry, model_ids) -> None:
    with serve(registry, session_open_wait_s=0.0) as (_, client):
        session = client.create_session(
            {"kind": "lsl", "name": "no-such-stream-here", "resolve_timeout_s": 1.0},
            [model_ids["classifier"]],
        )
        assert session.status == "starting"
        final = client.delete_session(session.id)  # returns once the resolve has ended
        # the resolve ends at its timeout without a stream: the opening failed, and says why
        assert final.status == "failed"
        assert final.error is not None and "no-such-stream-here" in final.error
        assert session.id not in {s.id for s in client.sessions()}
