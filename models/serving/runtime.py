"""ONNX Runtime sessions for artifacts, and the window model the decode engine runs.

:func:`get_session` keeps one :class:`RuntimeSession` (one ``onnxruntime.InferenceSession``)
per model and process, keyed by the artifact's content hash, so every streaming session and
batch job that decodes with the same model shares it (ONNX Runtime sessions are safe to call
from several threads). The CUDA execution provider is used when it really works: a session is
created with it and a warm-up inference runs; if the session fell back (checked with
``InferenceSession.get_providers()``) or the warm-up failed, a CPU session is used and the
reason is kept in :attr:`RuntimeSession.provider_note`.

:class:`OnnxWindowModel` wraps an artifact as the ``WindowModel`` of
:mod:`neurocast.streaming.engine.pipeline`: it checks the stream against the artifact, builds the
online preprocessing from the artifact's spec (plus the streaming scalogram for scalogram
inputs) and turns the graph's output into the payload of its result kind.

Threads: ``intra_op_num_threads`` is the ``threads`` argument, else the environment variable
``NEUROCAST_THREADS``, else ``min(4, os.cpu_count())``; ONNX Runtime's threads do not spin
while idle, so a 2-core machine keeps a core for acquisition between inferences. The same
count parallelises the scalogram of scalogram models.

This module is on the serving path: it never imports torch.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import onnxruntime as ort
from numpy.typing import ArrayLike, NDArray

from neurocast.models.serving.artifact import Artifact, load_artifact
from neurocast.models.serving.compat import aliased_stream
from neurocast.models.serving.features import FeaturePreprocessor
from neurocast.streaming.engine.pipeline import OnlinePreprocessor
from neurocast.streaming.engine.results import ResultKind
from neurocast.streaming.engine.windows import WindowSpec
from neurocast.streaming.preprocessing.filters import OnlinePreprocessor as SignalPreprocessor
from neurocast.streaming.preprocessing.scalogram import ScalogramPreprocessor
from neurocast.streaming.sources.base import StreamInfo

logger = logging.getLogger(__name__)

ENV_THREADS = "NEUROCAST_THREADS"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
Device = Literal["auto", "cpu", "cuda"]


class Gallery(Protocol):
    """What a retrieval model needs of an image gallery (:mod:`.gallery`)."""

    def search(self, embedding: ArrayLike, k: int = 5) -> list[dict[str, Any]]: ...


def default_threads() -> int:
    """Intra-op threads: ``NEUROCAST_THREADS`` if set, else ``min(4, os.cpu_count())``.

    Raises
    ------
    ValueError
        If ``NEUROCAST_THREADS`` is not a positive integer.
    """
    value = os.environ.get(ENV_THREADS, "").strip()
    if value:
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"{ENV_THREADS}={value!r} must be a positive integer (threads).")
        return n
    return max(1, min(4, os.cpu_count() or 1))


class RuntimeSession:
    """One ONNX Runtime session for one artifact; get it with :func:`get_session`.

    Parameters
    ----------
    artifact : Artifact
        The validated artifact.
    threads : int
        Intra-op threads.
    device : str
        ``"auto"`` (CUDA when it works, else CPU), ``"cpu"`` or ``"cuda"`` (fail when CUDA does
        not work).

    Attributes
    ----------
    provider : str
        The execution provider really used (``"CUDAExecutionProvider"`` or
        ``"CPUExecutionProvider"``).
    provider_note : str
        Why CUDA is not used (empty when it is, or when ``device="cpu"``).
    load_ms : float
        Time to create the session and run the warm-up, in milliseconds.
    """

    def __init__(self, artifact: Artifact, *, threads: int, device: Device = "auto") -> None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}.")
        self.artifact = artifact
        self.threads = threads
        self.input_name = artifact.input.name
        self.output_name = artifact.output.name
        self.input_shape = artifact.metadata.input.shape
        t0 = time.perf_counter()
        data = artifact.read_bytes()
        self.provider_note = ""
        session = None
        if device != "cpu":
            session, self.provider_note = self._try_cuda(data)
            if session is None and device == "cuda":
                raise RuntimeError(
                    f"CUDA was requested for {artifact.name!r} but does not work here: "
                    f"{self.provider_note} Use device='auto' or 'cpu'."
                )
        if session is None:
            session = ort.InferenceSession(data, self._options(), providers=[CPU])
            self._session = session
            self._warm_up()
        self.provider = session.get_providers()[0]
        self.load_ms = (time.perf_counter() - t0) * 1e3
        logger.info(
            "Loaded %s (%s) on %s with %d threads in %.0f ms%s",
            artifact.name,
            artifact.sha256[:12],
            self.provider,
            threads,
            self.load_ms,
            f" ({self.provider_note})" if self.provider_note else "",
        )

    def _options(self) -> ort.SessionOptions:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # idle threads sleep instead of spinning: on a 2-core machine spinning would starve
        # the acquisition thread between windows
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        return opts

    def _try_cuda(self, data: bytes) -> tuple[ort.InferenceSession | None, str]:
        if CUDA not in ort.get_available_providers():
            return None, "onnxruntime was built without the CUDA execution provider."
        # a missing CUDA library is reported below; keep ONNX Runtime's own log quiet
        ort.set_default_logger_severity(4)
        try:
            session = ort.InferenceSession(data, self._options(), providers=[CUDA, CPU])
        except Exception as err:
            return None, f"creating a CUDA session failed: {err}"
        finally:
            ort.set_default_logger_severity(2)
        used = session.get_providers()
        if not used or used[0] != CUDA:
            return None, (
                "the CUDA execution provider is installed but could not start (no GPU, or "
                "missing CUDA/cuDNN libraries); running on CPU."
            )
        self._session = session
        try:
            self._warm_up()
        except Exception as err:
            return None, f"a CUDA warm-up inference failed ({err}); running on CPU."
        return session, ""

    def _warm_up(self) -> None:
        self.run(np.zeros((1, *self.input_shape), dtype=np.float32))

    def run(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        """Run a batch of windows.

        Parameters
        ----------
        x : array, shape (n_windows, *input_shape)
            Model inputs (float32).

        Returns
        -------
        y : ndarray, shape (n_windows, ...)
            The selected graph output for each window.
        """
        arr = np.ascontiguousarray(x, dtype=np.float32)
        if arr.ndim != len(self.input_shape) + 1 or arr.shape[1:] != self.input_shape:
            raise ValueError(
                f"Model {self.artifact.name!r} takes inputs of shape (n, "
                f"{', '.join(map(str, self.input_shape))}), got {arr.shape}."
            )
        if self.artifact.batch_dynamic or arr.shape[0] == 1:
            (y,) = self._session.run([self.output_name], {self.input_name: arr})
            return np.asarray(y)
        # a graph exported with a fixed batch of one takes the windows one by one
        return np.concatenate(
            [self._session.run([self.output_name], {self.input_name: a[None]})[0] for a in arr]
        )


_SESSIONS: dict[str, RuntimeSession] = {}
_SESSIONS_LOCK = threading.Lock()


def get_session(
    artifact: Artifact, *, threads: int | None = None, device: Device = "auto"
) -> RuntimeSession:
    """The process-wide session of a model, created (and warmed up) on first use.

    Parameters
    ----------
    artifact : Artifact
        The model.
    threads : int | None
        Intra-op threads for a new session (default :func:`default_threads`); ignored when
        the session exists.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"`` for a new session; ignored when it exists.

    Returns
    -------
    session : RuntimeSession
        The same object for every artifact with the same content hash.
    """
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(artifact.sha256)
        if session is None:
            n = default_threads() if threads is None else threads
            session = RuntimeSession(artifact, threads=n, device=device)
            _SESSIONS[artifact.sha256] = session
        return session


def loaded_sessions() -> list[RuntimeSession]:
    """Every session created in this process."""
    with _SESSIONS_LOCK:
        return list(_SESSIONS.values())


def release_session(artifact: Artifact) -> bool:
    """Forget a model's session (it is freed once no model holds it); True if there was one."""
    with _SESSIONS_LOCK:
        return _SESSIONS.pop(artifact.sha256, None) is not None


def _softmax(z: NDArray[np.floating]) -> NDArray[np.float64]:
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class OnnxWindowModel:
    """An artifact as a decoder for the decode engine (the ``WindowModel`` protocol).

    Parameters
    ----------
    artifact : Artifact | str | Path
        The artifact, or its path (loaded and validated).
    gallery : Gallery | None
        Retrieval models: the gallery searched for the ``top_k`` closest images.
    top_k : int
        Images returned per retrieval result.
    threads : int | None
        Threads for a new shared session and for the scalogram (default
        :func:`default_threads`).
    device : str
        Execution provider preference for a new shared session.

    Notes
    -----
    Payloads, by :attr:`kind`:

    - ``"probabilities"``: ``{"classes": [str], "probabilities": [float]}`` (softmax applied
      when the graph outputs logits);
    - ``"embedding"``: ``{"embedding": float32 array}``;
    - ``"retrieval"``: ``{"embedding": float32 array, "gallery": str}`` plus ``"topk"``
      (``gallery.search(embedding, top_k)``: ``[{image_id, label, score}, ...]``) when a
      gallery is attached;
    - ``"translation"``: ``{"ch_names": [str], "ch_types": [str], "sfreq_hz": float,
      "signal": float32 array (n_output_channels, n_samples)}``.

    Models trained on simulated data add ``"simulated_training_data": True``.
    """

    def __init__(
        self,
        artifact: Artifact | str | Path,
        *,
        gallery: Gallery | None = None,
        top_k: int = 5,
        threads: int | None = None,
        device: Device = "auto",
    ) -> None:
        self.artifact = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
        meta = self.artifact.metadata
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}.")
        if gallery is not None and meta.task != "retrieval":
            raise ValueError(
                f"Model {meta.name!r} is a {meta.task} model; galleries are for retrieval."
            )
        self.metadata = meta
        self.gallery = gallery
        self.top_k = top_k
        self.threads = default_threads() if threads is None else threads
        self.session = get_session(self.artifact, threads=self.threads, device=device)

    @property
    def name(self) -> str:
        """The model's name."""
        return self.metadata.name

    @property
    def kind(self) -> ResultKind:
        """Result kind (``classification`` gives ``"probabilities"``)."""
        return self.metadata.kind

    @property
    def window(self) -> WindowSpec:
        """Window and context the model reads (its stride is a hint only)."""
        return self.metadata.input.window

    @property
    def provider(self) -> str:
        """The execution provider the shared session really uses."""
        return self.session.provider

    def preprocessor(self, stream: StreamInfo) -> OnlinePreprocessor:
        """Online preprocessing of ``stream`` for this model.

        Raises
        ------
        StreamMismatchError
            If the stream does not fit (see :meth:`Artifact.check_stream`).
        """
        self.artifact.check_stream(stream)
        stream = aliased_stream(self.metadata, stream)
        spec = self.metadata.input
        picked = spec.preprocess.model_copy(update={"picks": spec.ch_names})
        if spec.features is not None:
            return FeaturePreprocessor(picked, spec.features, stream)
        pre = SignalPreprocessor(picked, stream)
        if spec.scalogram is None:
            return pre
        block = max(1, round(spec.stride_s * spec.scalogram.sfreq_hz))
        return ScalogramPreprocessor(
            pre,
            spec.scalogram,
            center=spec.preprocess.robust_center,
            scale=spec.preprocess.robust_scale,
            block=block - (1 - block % 2),
            n_threads=self.threads,
        )

    def run(self, x: NDArray[np.float32]) -> dict[str, Any]:
        """Decode one finalized window (channels × [frequencies ×] times)."""
        return self.payloads(self.session.run(np.asarray(x, dtype=np.float32)[None]))[0]

    def run_batch(self, x: NDArray[np.float32]) -> list[dict[str, Any]]:
        """Decode many windows at once (batch decoding): ``x`` is (n_windows, *input_shape)."""
        return self.payloads(self.session.run(x))

    def payloads(self, y: NDArray[np.float32]) -> list[dict[str, Any]]:
        """Turn a batch of graph outputs into result payloads (one per window)."""
        meta = self.metadata
        out = meta.output
        extra = {"simulated_training_data": True} if meta.simulated_training_data else {}
        if meta.task == "classification":
            probs = _softmax(y) if out.logits else np.asarray(y, dtype=np.float64)
            classes = list(out.class_names or ())
            return [{"classes": classes, "probabilities": p.tolist(), **extra} for p in probs]
        if meta.task == "translation":
            return [
                {
                    "ch_names": list(out.ch_names or ()),
                    "ch_types": list(out.ch_types or ()),
                    "sfreq_hz": float(out.sfreq_hz or 0.0),
                    "signal": np.asarray(s, dtype=np.float32),
                    **extra,
                }
                for s in y
            ]
        results: list[dict[str, Any]] = []
        for e in y:
            emb = np.asarray(e, dtype=np.float32)
            payload: dict[str, Any] = {"embedding": emb, **extra}
            if meta.task == "retrieval":
                payload["gallery"] = out.gallery
                if self.gallery is not None:
                    payload["topk"] = self.gallery.search(emb, self.top_k)
            results.append(payload)
        return results
