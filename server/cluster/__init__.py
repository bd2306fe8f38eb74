"""Running the decoding service on a Ray cluster (optional: ``pip install neurocast[ray]``).

- :mod:`.actor` and :mod:`.remote`: each live session in a Ray actor, relayed to the gateway's
  WebSocket hub by an asyncio task (:class:`~.remote.RemoteLoop` has the shape of
  :class:`~neurocast.streaming.engine.loop.DecodeLoop`, so a session can use either);
- :mod:`.pool`: a shared decoder pool on Ray Serve that batches windows from many sessions;
- :mod:`.batch`: many recordings decoded at once with Ray Data;
- :mod:`.gateway`: the gateway and the pool as Ray Serve applications (the KubeRay
  RayService in ``deploy/ray/``).

Importing this package does not import Ray; :mod:`.settings` and :mod:`.plain` never do, the
other modules do, so the service imports them only when it runs with Ray.
"""

from __future__ import annotations

import importlib.util

RAY_MISSING = (
    "Ray is not installed; install the ray extra (pip install 'neurocast[ray]') to run "
    "sessions, the decoder pool or batch jobs on a Ray cluster."
)


def ray_available() -> bool:
    """True when Ray can be imported (checked without importing it)."""
    return importlib.util.find_spec("ray") is not None
