"""Batch decoding over REST against the same decoding in one process.

A real recording from ``../shared/data`` (default: PhysioNet EEGBCI subject 1, run 3, 64 EEG
channels at 160 Hz, 125 s; 100 ms windows every 25 ms, about 5,000 windows) is decoded

- directly: read with MNE and run through the decode engine and the ONNX runtime in this
  process (``load_recording`` + ``decode_recording``, what a job does internally);
- over REST: uploaded to a real server (uvicorn on loopback, in this process) with
  ``POST /v1/decode``, the client waiting for the job with long polls (``GET /v1/jobs/{id}
  ?wait_s=``, answered as soon as it finishes), and its results downloaded as NPZ.

Both decode exactly the same windows with the same model. The model is an ONNX artifact built
here for the recording's 64 EEG channels (log band power of a 16-filter spatial projection →
linear → softmax, fixed random weights): the figure is the service's overhead, not accuracy.
``--model`` runs any artifact that fits the file instead.

Figures: ``direct_windows_per_s`` and ``rest_windows_per_s`` (medians over runs, interleaved),
``rest_overhead`` = direct / rest (target <= 1.10), plus ``n_windows`` and the split used
(none: nothing is trained or evaluated).

Usage: ``python bench/batch_decode.py [--quick] [--file PATH] [--model ARTIFACT]``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import _common
import numpy as np

DEFAULT_FILE = _common.SHARED_DATA / "eegbci" / "S001R03.edf"
TOKEN = "bench-token"


def build_eeg_classifier(ch_names: list[str], sfreq: float, folder: Path) -> Path:
    """An EEG classifier artifact for these channels (a real ONNX graph, fixed random weights).

    Log band power of a 16-filter spatial projection, then a linear layer and softmax: cheap
    enough that the benchmarks measure the service, not the model.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from neurocast.models.serving import (
        ArtifactMetadata,
        InputSpec,
        OutputSpec,
        Provenance,
        save_artifact,
    )
    from neurocast.streaming.preprocessing.filters import PreprocessSpec

    picks = list(ch_names)
    n_t = round(0.1 * sfreq)
    rng = np.random.default_rng(0)
    weights = {
        "spatial": rng.normal(0, 1, (16, len(picks))),
        "eps": np.array([1e-30]),
        "w": rng.normal(0, 0.3, (16, 2)),
        "b": np.zeros(2),
    }
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["spatial", "x"], ["f"]),
            helper.make_node("Mul", ["f", "f"], ["sq"]),
            helper.make_node("ReduceMean", ["sq"], ["ms"], axes=[2], keepdims=0),
            helper.make_node("Add", ["ms", "eps"], ["mse"]),
            helper.make_node("Log", ["mse"], ["lp"]),
            helper.make_node("MatMul", ["lp", "w"], ["z"]),
            helper.make_node("Add", ["z", "b"], ["y"]),
        ],
        "bench-eeg-classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", len(picks), n_t])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    meta = ArtifactMetadata(
        name="bench-eeg-classifier",
        version="1",
        task="classification",
        input=InputSpec(
            ch_names=picks,
            ch_types=["eeg"] * len(picks),
            sfreq_hz=sfreq,
            window_s=0.1,
            preprocess=PreprocessSpec(line_freq_hz=60.0, l_freq_hz=1.0, h_freq_hz=40.0),
        ),
        output=OutputSpec(class_names=["a", "b"], logits=True),
        provenance=Provenance(data="none: fixed random weights (overhead benchmark)", split="none"),
        simulated_training_data=False,
    )
    return save_artifact(model, meta, folder / "bench-eeg-classifier.onnx").path


def _shared_name(path: Path) -> str:
    """The path relative to ``../shared/data`` when it is there (as RESULTS.md cites files)."""
    root = _common.SHARED_DATA.resolve()
    full = path.resolve()
    return str(full.relative_to(root)) if full.is_relative_to(root) else str(path)


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE, help="recording to decode")
    parser.add_argument("--model", type=Path, help="an artifact that fits the file")
    args = parser.parse_args()
    if not args.file.is_file():
        sys.exit(f"{args.file} not found: this benchmark needs ../shared/data beside the repo.")
    repeats = 3 if args.quick else 9

    from neurocast.clients.client import Client
    from neurocast.models.serving.runtime import OnnxWindowModel
    from neurocast.server.app import create_app
    from neurocast.server.config import Settings
    from neurocast.server.registry import ModelRegistry
    from neurocast.server.runner import ServerThread
    from neurocast.streaming.engine.batch import decode_recording, load_recording, read_header

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.model is not None:
            artifact = folder / args.model.name
            artifact.write_bytes(args.model.read_bytes())
        else:
            raw = read_header(args.file)
            eeg = [
                c for c, t in zip(raw.ch_names, raw.get_channel_types(), strict=True) if t == "eeg"
            ]
            artifact = build_eeg_classifier(eeg, float(raw.info["sfreq"]), folder)
        registry = ModelRegistry.discover(folder, packaged=False)
        (model_id,) = registry.ids()
        model = OnnxWindowModel(artifact)

        def direct() -> int:
            recording = load_recording(args.file)
            return len(decode_recording(recording, [model]))

        settings = Settings(token=TOKEN, max_upload_bytes=1024**3)
        server = ServerThread(create_app(settings, registry))
        with server, Client(server.url, token=TOKEN) as client:

            def rest() -> int:
                job = client.submit_decode(args.file, models=[model_id])
                job = client.wait_job(job.id, timeout_s=600)
                if job.status != "done":
                    sys.exit(f"The job {job.status}: {job.error}")
                client.download_results(job.id, "npz", folder / "results.npz")
                return job.n_windows_done

            direct()  # warm-up: file cache, runtime session
            rest()
            direct_rates, rest_rates = [], []
            n_windows = 0
            for _ in range(repeats):
                t0 = time.perf_counter()
                n_windows = direct()
                direct_rates.append(n_windows / (time.perf_counter() - t0))
                t0 = time.perf_counter()
                n_rest = rest()
                rest_rates.append(n_rest / (time.perf_counter() - t0))
                if n_rest != n_windows:
                    sys.exit(f"REST decoded {n_rest} windows, direct {n_windows}.")
                _common.log(
                    f"direct {direct_rates[-1]:.0f} windows/s, REST {rest_rates[-1]:.0f} "
                    f"windows/s ({n_windows} windows)"
                )
    direct_rate = statistics.median(direct_rates)
    rest_rate = statistics.median(rest_rates)
    figures = {
        "direct_windows_per_s": round(direct_rate, 1),
        "rest_windows_per_s": round(rest_rate, 1),
        "rest_overhead": round(direct_rate / rest_rate, 3),
        "n_windows": n_windows,
        "file": _shared_name(args.file),
        "model": model_id,
        "split": "none (no training or evaluation: throughput only)",
        "runs": repeats,
        "quick": args.quick,
    }
    _common.emit(figures)


if __name__ == "__main__":
    main()
