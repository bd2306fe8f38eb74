"""Helpers shared by the service tests: real models, a real server, misbehaving clients.

Nothing here is a test; the service test modules import its helpers and load its fixtures
with ``pytest_plugins``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from neurocast.clients.client import Client
from neurocast.models.serving import (
    ArtifactMetadata,
    InputSpec,
    OutputSpec,
    Provenance,
    save_artifact,
)
from neurocast.models.serving.gallery import Gallery, make_thumbnail
from neurocast.server.app import create_app
from neurocast.server.config import Settings
from neurocast.server.registry import ModelRegistry
from neurocast.server.runner import ServerThread
from neurocast.streaming.preprocessing.filters import PreprocessSpec
from neurocast.streaming.sources.simulator.simulator import Simulator
from neurocast.streaming.sources.specs import SimulatorSpec

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# a light simulator stream: EEG only, so the sessions of the tests stay cheap
SIM_SPEC = SimulatorSpec(modality="eeg", sfreq=250.0, seed=3)


def wait_until(predicate: Callable[[], Any], timeout_s: float = 20.0, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.05)


@contextlib.contextmanager
def serve(registry: ModelRegistry, **settings: Any) -> Iterator[tuple[ServerThread, Client]]:
    """A real server under uvicorn on a free loopback port, and a client for it.

    Its state directory is a new temporary one unless ``state_dir`` is given, so that no test
    restores the sessions or lists the jobs of another.
    """
    settings.setdefault("state_dir", Path(tempfile.mkdtemp(prefix="neurocast-state-")))
    app = create_app(Settings(token=TOKEN, **settings), registry)
    server = ServerThread(app)
    with server, Client(server.url, token=TOKEN) as client:
        yield server, client


def server_fixture(**settings: Any) -> Any:
    """A module-scoped ``running`` fixture: :func:`serve` of the test models with ``settings``."""

    @pytest.fixture(scope="module")
    def running(registry: ModelRegistry) -> Iterator[tuple[ServerThread, Client]]:
        with serve(registry, **settings) as pair:
            yield pair

    return running


def write_simulated_recording(path: Path, seconds: float, **spec: Any) -> Path:
    """A simulated recording saved as FIF (its info says SIMULATED)."""
    sim = Simulator(SIM_SPEC.model_copy(update=spec))
    sim.simulate_raw(seconds).save(path, overwrite=True, verbose="error")
    return path


def ws_url(server: ServerThread, session_id: str) -> str:
    """The WebSocket URL of a session's result stream on ``server``."""
    return f"ws://{server.host}:{server.port}/v1/sessions/{session_id}/stream"


def raw_websocket(
    server: ServerThread, session_id: str, *, rcvbuf: int | None = None, token: str = TOKEN
) -> socket.socket:
    """A hand-made WebSocket client socket after a successful handshake (for fault tests)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect((server.host, server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /v1/sessions/{session_id}/stream HTTP/1.1\r\nHost: {server.host}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert b" 101 " in head.split(b"\r\n")[0], head
    return sock


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A masked client → server WebSocket frame."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    else:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def subscribe_frame(**fields: Any) -> bytes:
    """A subscribe message as a client frame."""
    return client_frame(json.dumps({"type": "subscribe", **fields}).encode())


# ---------------------------------------------------------------------------------------------
# real models: tiny ONNX graphs written as artifacts, decoded by the real runtime

EEG_PICKS = ["Fp1", "Fpz", "Fp2", "AF7", "AF3", "AFz", "AF4", "AF8"]  # simulator EEG names
MODEL_IDS = {
    "classifier": "test-classifier",
    "translator": "test-translator",
    "retrieval": "test-retrieval",
}
N_MEG = 306
GALLERY = "test-gallery"


def _input_spec(**preprocess: Any) -> InputSpec:
    return InputSpec(
        ch_names=EEG_PICKS,
        ch_types=["eeg"] * len(EEG_PICKS),
        sfreq_hz=SIM_SPEC.sfreq,
        window_s=0.1,
        preprocess=PreprocessSpec(l_freq_hz=1.0, **preprocess),
    )


def _graph(
    name: str, nodes: list, weights: dict[str, np.ndarray], out_shape: list
) -> onnx.ModelProto:
    n_t = round(0.1 * SIM_SPEC.sfreq)
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", len(EEG_PICKS), n_t])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", *out_shape])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _metadata(name: str, task: str, output: OutputSpec, **preprocess: Any) -> ArtifactMetadata:
    return ArtifactMetadata(
        name=name,
        version="1",
        task=task,
        input=_input_spec(**preprocess),
        output=output,
        provenance=Provenance(data="none (fixed random weights for tests)", split="none", seed=0),
        simulated_training_data=True,
    )


def build_test_models(folder: Path) -> dict[str, str]:
    """Write a classifier, an EEG→MEG translator and a retrieval model with its gallery.

    The graphs are small but real: log band power → linear → logits; a linear EEG→MEG map;
    band power → linear embedding searched in a gallery of generated images.
    """
    rng = np.random.default_rng(0)
    power = [
        helper.make_node("Mul", ["x", "x"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["ms"], axes=[2], keepdims=0),
        helper.make_node("Add", ["ms", "eps"], ["mse"]),
        helper.make_node("Log", ["mse"], ["lp"]),
    ]
    eps = np.array([1e-30])
    clf = _graph(
        "classifier",
        [
            *power,
            helper.make_node("MatMul", ["lp", "w"], ["z"]),
            helper.make_node("Add", ["z", "b"], ["y"]),
        ],
        {"eps": eps, "w": rng.normal(0, 0.5, (len(EEG_PICKS), 3)), "b": np.zeros(3)},
        [3],
    )
    save_artifact(
        clf,
        _metadata(
            MODEL_IDS["classifier"],
            "classification",
            OutputSpec(class_names=["rest", "speech", "motor"], logits=True),
        ),
        folder / "classifier.onnx",
    )
    meg = [f"MEG{i:04d}" for i in range(N_MEG)]
    tr = _graph(
        "translator",
        [helper.make_node("MatMul", ["w", "x"], ["y"])],
        {"w": rng.normal(0, 1e-8, (N_MEG, len(EEG_PICKS)))},
        [N_MEG, round(0.1 * SIM_SPEC.sfreq)],
    )
    save_artifact(
        tr,
        _metadata(
            MODEL_IDS["translator"],
            "translation",
            OutputSpec(ch_names=meg, ch_types=["mag"] * N_MEG, sfreq_hz=SIM_SPEC.sfreq),
        ),
        folder / "translator.onnx",
    )
    dim = 16
    ret = _graph(
        "retrieval",
        [*power, helper.make_node("MatMul", ["lp", "w"], ["y"])],
        {"eps": eps, "w": rng.normal(0, 1.0, (len(EEG_PICKS), dim))},
        [dim],
    )
    save_artifact(
        ret,
        _metadata(
            MODEL_IDS["retrieval"], "retrieval", OutputSpec(embedding_size=dim, gallery=GALLERY)
        ),
        folder / "retrieval.onnx",
    )
    labels = ["faces"] * 4 + ["houses"] * 4
    images = []
    for i in range(len(labels)):
        rgb = np.zeros((48, 48, 3), np.uint8)
        rgb[..., i % 3] = np.linspace(40, 255, 48, dtype=np.uint8)[None, :]
        rgb[16:32, 16:32] = 255 if labels[i] == "faces" else 0
        images.append(make_thumbnail(Image.fromarray(rgb), size_px=48, fmt="png"))
    Gallery(
        [f"{lab}.img{i}" for i, lab in enumerate(labels)],
        labels,
        rng.normal(size=(len(labels), dim)),
        images,
        name=GALLERY,
        thumbnail_format="png",
    ).save(folder / f"{GALLERY}.npz")
    return MODEL_IDS


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of real test artifacts."""
    folder = tmp_path_factory.mktemp("models")
    build_test_models(folder)
    return folder


@pytest.fixture(scope="session")
def registry(models_dir: Path) -> ModelRegistry:
    """The test artifacts, as a server finds them (packaged models left out)."""
    return ModelRegistry.discover(models_dir, packaged=False)


@pytest.fixture(scope="session")
def model_ids() -> dict[str, str]:
    """Ids of the test models by role."""
    return dict(MODEL_IDS)
