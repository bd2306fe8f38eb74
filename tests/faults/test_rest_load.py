"""REST load against a real server: 200 concurrent clients on loopback get only the answers the
API documents, leave no session behind and leak no file descriptor."""

from __future__ import annotations

import asyncio
import os
from collections import defaultdict
from collections.abc import Iterator

import httpx
import pytest
from test_server_support import AUTH, SIM_SPEC, serve, wait_until, write_simulated_recording

from neurocast.clients.client import Client
from neurocast.server.registry import ModelRegistry
from neurocast.server.runner import ServerThread

pytest_plugins = ["test_server_support"]
pytestmark = pytest.mark.timeout(120)

N_CLIENTS = 200
MAX_SESSIONS = 4
MAX_QUEUED_JOBS = 2
# connections the clients share: enough to contend for the limits, few enough that the pool
# (not the kernel's listen backlog) is what queues the rest
MAX_CONNECTIONS = 16
# descriptors that may stay open after the load for reasons that are not a leak (the event
# loop's and the thread pool's own, a lazily opened log or cache file)
FD_MARGIN = 8


def _open_fds() -> int:
    """Open file descriptors of this process (server and clients both live in it)."""
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A one-second SIMULATED recording, as the bytes of a FIF upload."""
    path = write_simulated_recording(tmp_path_factory.mktemp("load") / "load_raw.fif", 1.0)
    return path.read_bytes()


@pytest.fixture(scope="module")
def running(registry: ModelRegistry) -> Iterator[tuple[ServerThread, Client]]:
    """A server whose session and job limits are far below the number of clients."""
    # creating a session answers at once (status "starting"): the load is on the API, not on
    # how fast simulators open
    with serve(
        registry,
        max_sessions=MAX_SESSIONS,
        max_queued_jobs=MAX_QUEUED_JOBS,
        job_workers=1,
        session_open_wait_s=0.0,
    ) as pair:
        yield pair


async def _session_client(
    http: httpx.AsyncClient, model: str, seen: dict[str, list[int]], sizes: list[int]
) -> None:
    """Create a session, read it back and delete it; a refusal must be a 429."""
    # a slow decode rate: the sessions' own work would otherwise starve the API on small machines
    body = {"source": SIM_SPEC.model_dump(mode="json"), "models": [model], "stride_s": 0.5}
    created = await http.post("/v1/sessions", json=body)
    seen["POST /v1/sessions"].append(created.status_code)
    listed = await http.get("/v1/sessions")
    seen["GET /v1/sessions"].append(listed.status_code)
    if listed.status_code == 200:
        sizes.append(len(listed.json()["sessions"]))
    if created.status_code != 201:
        return
    sid = created.json()["id"]
    got = await http.get(f"/v1/sessions/{sid}")
    seen["GET /v1/sessions/{id}"].append(got.status_code)
    assert got.status_code != 200 or got.json()["id"] == sid
    deleted = await http.delete(f"/v1/sessions/{sid}")
    seen["DELETE /v1/sessions/{id}"].append(deleted.status_code)


async def _job_client(
    http: httpx.AsyncClient,
    model: str,
    recording: bytes,
    seen: dict[str, list[int]],
    accepted: list[str],
) -> None:
    """Submit a small upload; a refusal must be a 429 that says when to retry."""
    submitted = await http.post(
        "/v1/decode",
        data={"models": [model], "stride_s": "0.1"},
        files={"file": ("load_raw.fif", recording)},
    )
    seen["POST /v1/decode"].append(submitted.status_code)
    if submitted.status_code == 202:
        accepted.append(submitted.json()["id"])
    elif submitted.status_code == 429:
        # a client told to back off must be told for how long
        seen["429 Retry-After (s)"].append(int(submitted.headers["retry-after"]))
    listed = await http.get("/v1/jobs")
    seen["GET /v1/jobs"].append(listed.status_code)


async def _list_client(
    http: httpx.AsyncClient, seen: dict[str, list[int]], sizes: list[int]
) -> None:
    """Read both lists, as a dashboard polling the server does."""
    sessions = await http.get("/v1/sessions")
    seen["GET /v1/sessions"].append(sessions.status_code)
    if sessions.status_code == 200:
        sizes.append(len(sessions.json()["sessions"]))
    jobs = await http.get("/v1/jobs")
    seen["GET /v1/jobs"].append(jobs.status_code)


async def _load(
    url: str, model: str, recording: bytes
) -> tuple[dict[str, list[int]], list[int], list[str]]:
    """Run every client at once through one bounded connection pool."""
    seen: dict[str, list[int]] = defaultdict(list)
    sizes: list[int] = []
    accepted: list[str] = []
    limits = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=8)
    # the pool queues clients behind each other: the timeout bounds a stuck server, not a
    # slow turn
    timeout = httpx.Timeout(60.0, pool=90.0)
    async with httpx.AsyncClient(
        base_url=url, headers=AUTH, limits=limits, timeout=timeout
    ) as http:
        await asyncio.gather(
            *(
                _session_client(http, model, seen, sizes)
                if i % 4 == 0
                else _job_client(http, model, recording, seen, accepted)
                if i % 4 == 1
                else _list_client(http, seen, sizes)
                for i in range(N_CLIENTS)
            )
        )
    return seen, sizes, accepted


def test_concurrent_clients_get_documented_answers_and_leak_nothing(
    running: tuple[ServerThread, Client], model_ids: dict[str, str], recording: bytes
) -> None:
    server, client = running
    model = model_ids["classifier"]
    # one session and one job first, so that the descriptors opened once per process (model
    # sessions, thread pools, the state folder) are counted in the baseline, not as a leak
    client.delete_session(client.create_session(SIM_SPEC, [model]).id)
    warm = httpx.post(
        server.url + "/v1/decode",
        headers=AUTH,
        data={"models": [model]},
        files={"file": ("load_raw.fif", recording)},
        timeout=60,
    )
    assert warm.status_code == 202, warm.text
    client.wait_job(warm.json()["id"], timeout_s=60)
    before = _open_fds()

    seen, sizes, accepted = asyncio.run(_load(server.url, model, recording))

    allowed = {
        "POST /v1/sessions": {201, 429},
        "GET /v1/sessions": {200},
        "GET /v1/sessions/{id}": {200},
        "DELETE /v1/sessions/{id}": {200},
        "POST /v1/decode": {202, 429},
        "GET /v1/jobs": {200},
    }
    for route, codes in allowed.items():
        assert set(seen[route]) <= codes, (route, sorted(set(seen[route])))
    # every client was answered, and the limits let some through and refused others
    # a quarter of the clients cycle a session, a quarter submit a job, the rest only read
    assert len(seen["POST /v1/sessions"]) == len(seen["POST /v1/decode"]) == N_CLIENTS // 4
    assert len(seen["GET /v1/sessions"]) == len(seen["GET /v1/jobs"]) == 3 * N_CLIENTS // 4
    assert 201 in seen["POST /v1/sessions"] and 202 in seen["POST /v1/decode"]
    assert seen["POST /v1/sessions"].count(201) == len(seen["DELETE /v1/sessions/{id}"])
    assert all(s >= 1 for s in seen["429 Retry-After (s)"])
    assert len(sizes) == 3 * N_CLIENTS // 4

    for job_id in accepted:
        assert client.wait_job(job_id, timeout_s=60).status == "done"
    assert client.sessions() == []
    # descriptors are released asynchronously (closing sockets, finished workers): poll for
    # the count to come back rather than sleep a guessed time
    wait_until(lambda: _open_fds() <= before + FD_MARGIN, 20.0, "file descriptors to settle")


def test_session_limit_holds_under_concurrent_creates(
    registry: ModelRegistry, model_ids: dict[str, str]
) -> None:
    limit, n = 2, 12

    async def create_all(url: str) -> list[httpx.Response]:
        body = {"source": SIM_SPEC.model_dump(mode="json"), "models": [model_ids["classifier"]]}
        async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=60.0) as http:
            return list(
                await asyncio.gather(*(http.post("/v1/sessions", json=body) for _ in range(n)))
            )

    with serve(registry, max_sessions=limit, session_open_wait_s=0.0) as (server, client):
        answers = asyncio.run(create_all(server.url))
        try:
            assert {r.status_code for r in answers} <= {201, 429}
            assert len(client.sessions()) <= limit
            assert [r.status_code for r in answers].count(201) <= limit
        finally:
            for r in answers:
                if r.status_code == 201:
                    client.delete_session(r.json()["id"])
