"""The REST API fuzzed from its OpenAPI schema (schemathesis): no 5xx, answers as documented."""

from __future__ import annotations

import collections

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from test_server_support import AUTH, serve

pytest_plugins = ["test_server_support"]
pytestmark = pytest.mark.timeout(300)

EXAMPLES = 10  # per operation
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_api_from_its_schema(registry, tmp_path_factory) -> None:
    data_root = tmp_path_factory.mktemp("fuzz-data")
    # one session at most: fuzzed simulator sessions would otherwise pile up
    with serve(
        registry,
        data_root=data_root,
        max_sessions=1,
        session_open_wait_s=2.0,
        max_upload_bytes=1024**2,
    ) as (server, client):
        schema = schemathesis.openapi.from_url(server.url + "/openapi.json", headers=AUTH)
        labels: list[str] = []
        calls: list[int] = []
        for result in schema.get_all_operations():
            if isinstance(result, Err):
                pytest.fail(f"The OpenAPI schema has an invalid operation: {result.err()}")
            operation = result.ok()
            labels.append(operation.label)

            @given(case=operation.as_strategy())
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
                database=None,
            )
            def fuzz(case: schemathesis.Case) -> None:
                response = case.call_and_validate(headers=AUTH, timeout=30, checks=CHECKS)
                calls.append(response.status_code)
                for session in client.sessions():  # at most one fuzzed session alive
                    client.delete_session(session.id)

            fuzz()
        assert "POST /v1/sessions" in labels and "POST /v1/decode" in labels
        assert len(calls) >= 3 * len(labels)
        print(
            f"{len(calls)} fuzzed calls over {len(labels)} operations: "
            f"{sorted(collections.Counter(calls).items())}"
        )
