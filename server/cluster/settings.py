"""Configuration of the Ray deployment: session actors, the decoder pool, the relay.

Read from ``NEUROCAST_RAY_*`` environment variables (``NEUROCAST_RAY_POOL`` is a JSON list), or
built directly. This module does not import Ray.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

RestartPolicy = Literal["never", "on_failure"]


class PoolModel(BaseModel):
    """One model served by the shared decoder pool (one Ray Serve application).

    Parameters
    ----------
    model : str
        The model id (an installed artifact's name).
    replicas : int
        Replicas of the deployment.
    num_cpus : float
        CPUs each replica reserves.
    num_gpus : float
        GPU fraction each replica reserves (0.25 puts four replicas on one GPU).
    max_batch_size : int
        Most windows one inference call takes.
    batch_wait_timeout_s : float
        Longest a window waits for others to fill a batch, in seconds.
    device : str
        ``"auto"`` (CUDA when it works), ``"cpu"`` or ``"cuda"``.
    threads : int | None
        Intra-op threads of each replica's ONNX Runtime session (None: the runtime's default).
    """

    model_config = ConfigDict(extra="forbid")

    model: str
    replicas: int = Field(1, ge=1)
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    max_batch_size: int = Field(16, ge=1)
    batch_wait_timeout_s: float = Field(0.002, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1)

    @property
    def app_name(self) -> str:
        """The Ray Serve application (and deployment) name of this model's pool."""
        return pool_app_name(self.model)


def pool_app_name(model_id: str) -> str:
    """Serve application name of a model's decoder pool."""
    return f"decoder-{model_id}"


class ClusterSettings(BaseSettings):
    """How the service uses a Ray cluster.

    Parameters
    ----------
    address : str | None
        Cluster to join (``"auto"``, ``"ray://head:10001"``); None starts a local one.
    namespace : str
        Ray namespace of the service's actors.
    session_num_cpus : float
        CPUs each session actor reserves.
    session_num_gpus : float
        GPU fraction each session actor reserves (for models it runs itself on CUDA).
    restart : str
        ``"on_failure"``: a session whose actor dies is re-created and resumes on the live
        stream; ``"never"``: it turns ``failed`` with the reason.
    max_restarts : int
        Re-creations allowed per session.
    queue_size : int
        Results buffered in a session actor for the gateway; when full the oldest is dropped
        and counted.
    relay_batch : int
        Most results the relay pulls per call.
    relay_wait_s : float
        How long a pull waits for a first result, in seconds.
    stats_interval_s : float
        How often the relay refreshes a session's counters, in seconds.
    start_timeout_s : float
        How long opening a session's source (in its actor) may take, in seconds.
    pool : list of PoolModel
        Models decoded by the shared pool instead of in each session actor.
    """

    model_config = SettingsConfigDict(env_prefix="NEUROCAST_RAY_", extra="forbid")

    address: str | None = None
    namespace: str = "neurocast"
    session_num_cpus: float = Field(1.0, ge=0)
    session_num_gpus: float = Field(0.0, ge=0)
    restart: RestartPolicy = "on_failure"
    max_restarts: int = Field(3, ge=0)
    queue_size: int = Field(256, ge=1)
    relay_batch: int = Field(64, ge=1)
    relay_wait_s: float = Field(0.05, gt=0)
    stats_interval_s: float = Field(0.5, gt=0)
    start_timeout_s: float = Field(60.0, gt=0)
    pool: list[PoolModel] = Field(default_factory=list)

    def pooled(self) -> dict[str, str]:
        """Serve application name of each pooled model, by model id."""
        return {p.model: p.app_name for p in self.pool}
