"""The service on a Ray cluster: starting it from the gateway, and as Ray Serve applications.

:func:`start_cluster` is what ``neurocast serve --ray`` runs before serving: it joins the cluster
and deploys the decoder pools that are not deployed yet (under KubeRay the RayService has
deployed them already). :func:`build_gateway_app` and
:func:`~neurocast.server.cluster.pool.build_decoder_app` are the application builders that
``deploy/ray/rayservice.yaml`` names.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from ray import serve

from neurocast.server.cluster.pool import deploy_pool, pool_info
from neurocast.server.cluster.remote import connect
from neurocast.server.cluster.settings import ClusterSettings

logger = logging.getLogger(__name__)


def deployed_apps() -> set[str]:
    """Names of the Serve applications running on the connected cluster (none without Serve)."""
    try:
        return set(serve.status().applications)
    except Exception:  # Serve not started on this cluster
        return set()


def start_cluster(
    settings: ClusterSettings | None = None, models_dir: Path | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Join the cluster and make sure every configured decoder pool runs.

    Parameters
    ----------
    settings : ClusterSettings | None
        Cluster address and pools (default: from ``NEUROCAST_RAY_*``).
    models_dir : Path | None
        Folder of artifacts besides the packaged ones (as the replicas see it).

    Returns
    -------
    pools : dict of str to list of dict
        For each pooled model, what its replicas report (``provider``, ``replica``, ...).
    """
    s = settings or ClusterSettings()
    connect(s)
    if not s.pool:
        return {}
    running = deployed_apps()
    missing = [p for p in s.pool if p.app_name not in running]
    handles = deploy_pool(missing, models_dir) if missing else {}
    for p in s.pool:
        if p.model not in handles:
            handles[p.model] = serve.get_app_handle(p.app_name)
    report = {model: pool_info(h) for model, h in handles.items()}
    for model, replicas in report.items():
        for r in replicas:
            logger.info("Decoder pool %s: replica %s on %s", model, r["replica"], r["provider"])
    return report


def gateway_asgi_app(overrides: dict[str, Any]) -> FastAPI:
    """The service's FastAPI app with ``overrides`` of its settings (built in the replica)."""
    from neurocast.server.app import create_app
    from neurocast.server.config import Settings

    return create_app(Settings.from_env(**overrides))


def build_gateway_app(args: dict[str, Any]) -> serve.Application:
    """Application builder of the gateway (REST, WebSocket, dashboard) as a Serve ingress.

    ``args`` are overrides of the service's settings (``neurocast.server.config.Settings``);
    the rest comes from ``NEUROCAST_*`` variables. Sessions run in actors when ``NEUROCAST_RAY``
    is on. The FastAPI app is built in the replica, not here: its thread pools and registries
    are not meant to be pickled. One replica, because sessions and their WebSocket subscribers
    live in the gateway's memory.
    """
    overrides = dict(args)

    def build() -> FastAPI:
        # a plain function, which Serve calls in the replica (a partial would pass as an app)
        return gateway_asgi_app(overrides)

    ingress = serve.ingress(build)
    wrapped = ingress(type("Gateway", (), {"__doc__": "The service's FastAPI app on Ray Serve."}))
    deployment = serve.deployment(name="gateway", num_replicas=1, ray_actor_options={"num_cpus": 1})
    return deployment(wrapped).bind()
