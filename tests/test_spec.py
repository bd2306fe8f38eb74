"""Source specs: JSON round trips, refusal of unknown kinds and fields, and the factory."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from neurocast.streaming.sources.open import open_source
from neurocast.streaming.sources.replay import ReplaySource
from neurocast.streaming.sources.specs import (
    FieldTripSpec,
    LSLSpec,
    ReplaySpec,
    SimulatorSpec,
    SourceSpec,
)

ADAPTER: TypeAdapter[SourceSpec] = TypeAdapter(SourceSpec)

EXAMPLES = [
    {"kind": "lsl", "name": "MyEEG"},
    {"kind": "lsl", "type": "EEG", "merge_with": [{"type": "MEG"}], "marker_stream": "Events"},
    {"kind": "lsl", "source_id": "amp-1234", "buffer_s": 2, "stall_after_s": 0.5},
    {"kind": "fieldtrip", "host": "127.0.0.1", "port": 1972},
    {"kind": "replay", "path": "rec_raw.fif", "speed": 4.0, "loop": True, "chunk_s": 0.02},
    {"kind": "simulator", "seed": 3},
]


@pytest.mark.parametrize("data", EXAMPLES, ids=lambda d: d["kind"])
def test_specs_round_trip_through_json(data: dict) -> None:
    spec = ADAPTER.validate_python(data)
    assert spec.kind == data["kind"]
    text = ADAPTER.dump_json(spec)
    again = ADAPTER.validate_json(text)
    assert again == spec
    assert ADAPTER.dump_python(spec, exclude_unset=True) == data


def test_the_kind_picks_the_spec_class() -> None:
    kinds = {type(ADAPTER.validate_python(d)) for d in EXAMPLES}
    assert kinds == {LSLSpec, FieldTripSpec, ReplaySpec, SimulatorSpec}


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ({"kind": "udp", "port": 5}, "does not match any of the expected tags"),
        ({"name": "MyEEG"}, "Unable to extract tag using discriminator"),
        ({"kind": "lsl", "name": "MyEEG", "nmae": "typo"}, "Extra inputs are not permitted"),
        ({"kind": "lsl", "name": "x", "merge_with": [{"name": "y", "rate": 1}]}, "Extra inputs"),
        ({"kind": "replay", "path": "a.fif", "speed": 0}, "greater than 0"),
        ({"kind": "replay", "path": "a.fif", "chunk_s": 5}, "less than or equal to 1"),
        ({"kind": "replay"}, "Field required"),
        ({"kind": "lsl"}, "at least one of name, type or source_id"),
        ({"kind": "lsl", "name": "x", "buffer_s": 0}, "greater than or equal to 1"),
        ({"kind": "fieldtrip", "port": 70000}, "less than or equal to 65535"),
    ],
)
def test_bad_specs_are_refused(data: dict, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        ADAPTER.validate_python(data)


def test_open_source_builds_the_replay_source() -> None:
    source = open_source(ReplaySpec(path="rec_raw.fif"))
    assert isinstance(source, ReplaySource)
    assert source.status == "starting"


def test_open_source_builds_an_unopened_lsl_source() -> None:
    from neurocast.streaming.sources.lsl import LSLSource

    source = open_source(LSLSpec(name="nothing-is-resolved-yet"))
    assert isinstance(source, LSLSource)
    assert source.status == "starting"
