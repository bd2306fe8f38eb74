"""A shared decoder pool: one Ray Serve deployment per heavy model, batching across sessions.

Each replica holds one ONNX Runtime session of its model (on CUDA when it really works, with
the GPU fraction the configuration gives) and runs the windows that arrive within
``batch_wait_timeout_s`` of each other, from any session, as one batch (``@serve.batch``).
Sessions use :class:`PooledWindowModel` in place of a local ONNX session: preprocessing stays in
the session (it is stateful and per stream), only the graph runs in the pool, and outputs become
payloads exactly as :class:`~neurocast.models.serving.runtime.OnnxWindowModel` makes them.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from ray import serve
from ray.serve.handle import DeploymentHandle

from neurocast.catalog import InstalledModel, UnknownModelError, by_name, discover
from neurocast.models.serving.runtime import (
    Device,
    OnnxWindowModel,
    RuntimeSession,
    get_session,
)
from neurocast.server.cluster.settings import PoolModel
from neurocast.streaming.engine.pipeline import OnlinePreprocessor
from neurocast.streaming.engine.results import ResultKind
from neurocast.streaming.engine.windows import WindowSpec
from neurocast.streaming.sources.base import StreamInfo


def find_model(model_id: str, models_dir: Path | str | None = None) -> InstalledModel:
    """The installed model of an id (``models_dir`` first, then the packaged ones).

    Raises
    ------
    UnknownModelError
        When no installed artifact has this id.
    """
    installed = by_name(discover(Path(models_dir) if models_dir else None))
    if model_id not in installed:
        raise UnknownModelError(model_id, installed)
    return installed[model_id]


@serve.deployment
class DecoderReplica:
    """One replica of a model's pool.

    Parameters
    ----------
    model_id : str
        The model it serves.
    models_dir : str | None
        Folder searched for the artifact before the packaged ones.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    threads : int | None
        Intra-op threads of its ONNX Runtime session.
    max_batch_size : int
        Most windows per inference.
    batch_wait_timeout_s : float
        Longest a window waits for a batch to fill, in seconds.
    """

    def __init__(
        self,
        model_id: str,
        models_dir: str | None = None,
        device: Device = "auto",
        threads: int | None = None,
        max_batch_size: int = 16,
        batch_wait_timeout_s: float = 0.002,
    ) -> None:
        self.model_id = model_id
        self.session: RuntimeSession = get_session(
            find_model(model_id, models_dir).artifact,
            threads=threads,
            device=device,
        )
        # the decorator's defaults are fixed at import; each pool sets its own
        self.run_window.set_max_batch_size(max_batch_size)  # type: ignore[attr-defined]
        self.run_window.set_batch_wait_timeout_s(batch_wait_timeout_s)  # type: ignore[attr-defined]
        self.batch_sizes: Counter[int] = Counter()

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def run_window(self, windows: list[NDArray[np.float32]]) -> list[NDArray[np.float32]]:
        """Graph output for each window (the windows of one call run as one batch)."""
        self.batch_sizes[len(windows)] += 1
        # off the replica's event loop, so that the next batch collects while this one runs
        y = await asyncio.to_thread(self.session.run, np.stack(windows))
        return list(y)

    def info(self) -> dict[str, Any]:
        """Which model, provider and replica this is, and the batch sizes it ran so far."""
        try:
            replica = serve.get_replica_context().replica_id.unique_id
        except Exception:  # outside a replica (a direct instance)
            replica = ""
        return {
            "model": self.model_id,
            "provider": self.session.provider,
            "provider_note": self.session.provider_note,
            "replica": replica,
            "pid": os.getpid(),
            "batch_sizes": dict(self.batch_sizes),
        }


def decoder_app(pool: PoolModel, models_dir: Path | str | None = None) -> serve.Application:
    """The Serve application of one model's pool, with its replicas and resources."""
    return DecoderReplica.options(  # type: ignore[attr-defined]
        name=pool.app_name,
        num_replicas=pool.replicas,
        max_ongoing_requests=max(4 * pool.max_batch_size, 16),
        ray_actor_options={"num_cpus": pool.num_cpus, "num_gpus": pool.num_gpus},
    ).bind(
        pool.model,
        str(models_dir) if models_dir else None,
        pool.device,
        pool.threads,
        pool.max_batch_size,
        pool.batch_wait_timeout_s,
    )


def build_decoder_app(args: dict[str, Any]) -> serve.Application:
    """Application builder for ``serve run``/RayService: ``args`` are :class:`PoolModel` fields
    plus an optional ``models_dir``."""
    fields = dict(args)
    models_dir = fields.pop("models_dir", None)
    return decoder_app(PoolModel(**fields), models_dir)


def deploy_pool(
    pools: list[PoolModel], models_dir: Path | str | None = None
) -> dict[str, DeploymentHandle]:
    """Deploy (or update) each model's pool on the connected cluster.

    Returns
    -------
    handles : dict of str to DeploymentHandle
        Each pool's handle, by model id.
    """
    serve.start(proxy_location="Disabled")
    return {
        p.model: serve.run(decoder_app(p, models_dir), name=p.app_name, route_prefix=None)
        for p in pools
    }


def pool_info(handle: DeploymentHandle, calls: int = 8) -> list[dict[str, Any]]:
    """What the replicas behind ``handle`` report (provider, batch sizes), one per replica
    reached in ``calls`` calls."""
    seen: dict[str, dict[str, Any]] = {}
    for _ in range(calls):
        info = handle.info.remote().result()
        seen[info["replica"]] = info
    return list(seen.values())


class PooledWindowModel:
    """A ``WindowModel`` whose graph runs in the shared pool.

    Parameters
    ----------
    local : OnnxWindowModel
        The model's artifact and payload rules (its preprocessing runs here); constructed
        with ``device="cpu"`` and one thread, since it never runs the graph on its own.
    handle : DeploymentHandle
        The model's pool.
    timeout_s : float
        Longest an inference may take in the pool, in seconds.
    """

    def __init__(
        self, local: OnnxWindowModel, handle: DeploymentHandle, timeout_s: float = 10.0
    ) -> None:
        self.local = local
        self.handle = handle
        self.timeout_s = timeout_s

    @classmethod
    def connect(
        cls, model_id: str, app_name: str, models_dir: Path | str | None = None
    ) -> PooledWindowModel:
        """The pooled model of ``model_id`` whose pool is the Serve application ``app_name``."""
        found = find_model(model_id, models_dir)
        local = OnnxWindowModel(found.artifact, gallery=found.gallery, threads=1, device="cpu")
        return cls(local, serve.get_app_handle(app_name))

    @property
    def name(self) -> str:
        """The model's name."""
        return self.local.name

    @property
    def kind(self) -> ResultKind:
        """Its result kind."""
        return self.local.kind

    @property
    def window(self) -> WindowSpec:
        """Window and context it reads."""
        return self.local.window

    def preprocessor(self, stream: StreamInfo) -> OnlinePreprocessor:
        """Online preprocessing of ``stream`` (runs in the session, not in the pool)."""
        return self.local.preprocessor(stream)

    def run(self, x: NDArray[np.float32]) -> dict[str, Any]:
        """Decode one finalized window in the pool (blocks until its batch ran)."""
        y = self.handle.run_window.remote(np.asarray(x, dtype=np.float32)).result(
            timeout_s=self.timeout_s
        )
        return self.local.payloads(np.asarray(y)[None])[0]
