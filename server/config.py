"""Settings of the decoding service, read from ``NEUROCAST_*`` environment variables.

Every setting can be given explicitly to :class:`Settings` (the ``neurocast serve`` options do
that) or through the environment with :meth:`Settings.from_env`:

=============================== ==========================================================
``NEUROCAST_HOST``              interface to bind (default ``127.0.0.1``)
``NEUROCAST_PORT``              TCP port (default 8000)
``NEUROCAST_TOKEN``             bearer token clients must send (generated when unset)
``NEUROCAST_AUTH``              ``off`` disables auth; refused unless bound to loopback
``NEUROCAST_MODELS_DIR``        directory of model artifacts (``*.onnx``)
``NEUROCAST_PACKAGED_MODELS``   ``off`` hides the models shipped with the package
``NEUROCAST_DATA_ROOT``         directory whose files ``POST /v1/decode`` and replay
                                sessions may read by path (unset: no path access)
``NEUROCAST_CORS_ORIGINS``      comma-separated origins allowed by CORS (default none)
``NEUROCAST_MAX_UPLOAD_MB``     upload size limit in MiB (default 512)
``NEUROCAST_MAX_SESSIONS``      sessions that may exist at once (default 16)
``NEUROCAST_WS_QUEUE``          messages buffered per WebSocket client (default 256)
=============================== ==========================================================
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, model_validator

_OFF = {"off", "0", "false", "no", "disabled"}


def is_loopback(host: str) -> bool:
    """True when ``host`` names a loopback interface (``127.0.0.0/8``, ``::1``, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseModel):
    """Configuration of one service instance.

    Parameters
    ----------
    host, port : str, int
        Where ``neurocast serve`` binds.
    token : SecretStr | None
        Bearer token required on REST and WebSocket calls. When auth is on and no token is
        given, a random one is generated (see :attr:`effective_token`).
    auth : bool
        False disables authentication; only allowed when ``host`` is a loopback address.
    models_dir : Path | None
        Directory searched for model artifacts, besides the packaged ones.
    packaged_models : bool
        Also offer the models shipped with the package (the demo models).
    data_root : Path | None
        Files under this directory may be decoded by path and replayed by sessions; anything
        resolving outside it is refused. None disables path access.
    cors_origins : list of str
        Origins allowed to call the API from a browser (``["*"]`` for any).
    max_upload_bytes : int
        Largest accepted upload (request body) in bytes.
    max_sessions : int
        Sessions that may exist at once, running or not.
    ws_queue_size : int
        Messages buffered per WebSocket client; when full the oldest is dropped.
    status_interval_s : float
        Period of the ``status`` messages sent to subscribers, in seconds.
    session_open_wait_s : float
        How long ``POST /v1/sessions`` waits for the source to open before answering.
    max_jobs : int
        Finished batch jobs kept (oldest results are discarded beyond this).
    job_workers : int
        Batch jobs decoded at once.
    """

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    token: SecretStr | None = None
    auth: bool = True
    models_dir: Path | None = None
    packaged_models: bool = True
    data_root: Path | None = None
    cors_origins: list[str] = Field(default_factory=list)
    max_upload_bytes: int = Field(512 * 1024**2, gt=0)
    max_sessions: int = Field(16, ge=1)
    ws_queue_size: int = Field(256, ge=1)
    status_interval_s: float = Field(1.0, gt=0)
    session_open_wait_s: float = Field(10.0, ge=0)
    max_jobs: int = Field(64, ge=1)
    job_workers: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if not self.auth and not is_loopback(self.host):
            raise ValueError(
                f"Authentication can only be turned off (NEUROCAST_AUTH=off) when the service "
                f"binds to loopback, but host is {self.host!r}. Set a token with NEUROCAST_TOKEN "
                f"or bind to 127.0.0.1."
            )
        if self.models_dir is not None and not self.models_dir.is_dir():
            raise ValueError(
                f"The models directory {self.models_dir} does not exist; create it or point "
                f"NEUROCAST_MODELS_DIR / --models-dir at a directory of model artifacts."
            )
        if self.data_root is not None:
            if not self.data_root.is_dir():
                raise ValueError(
                    f"The data root {self.data_root} is not a directory; point "
                    f"NEUROCAST_DATA_ROOT / --data-root at the folder holding your recordings."
                )
            self.data_root = self.data_root.resolve()
        return self

    _generated: bool = PrivateAttr(False)

    def model_post_init(self, context: object, /) -> None:
        """Generate a token when auth is on and none was configured."""
        if self.auth and self.token is None:
            self.token = SecretStr(secrets.token_urlsafe(24))
            self._generated = True

    @property
    def token_generated(self) -> bool:
        """True when no token was configured and one was generated for this run."""
        return self._generated

    @property
    def effective_token(self) -> str | None:
        """The token clients must send, or None when auth is off."""
        if not self.auth or self.token is None:
            return None
        return self.token.get_secret_value()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from ``NEUROCAST_*`` variables, with explicit ``overrides`` taking precedence.

        Parameters
        ----------
        env : mapping | None
            The environment to read (default ``os.environ``).
        **overrides
            Values that replace what the environment says (None values are ignored).
        """
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        simple = {
            "NEUROCAST_HOST": "host",
            "NEUROCAST_PORT": "port",
            "NEUROCAST_TOKEN": "token",
            "NEUROCAST_MODELS_DIR": "models_dir",
            "NEUROCAST_DATA_ROOT": "data_root",
            "NEUROCAST_MAX_SESSIONS": "max_sessions",
            "NEUROCAST_WS_QUEUE": "ws_queue_size",
        }
        for var, name in simple.items():
            if env.get(var):
                values[name] = env[var]
        if "NEUROCAST_AUTH" in env:
            values["auth"] = env["NEUROCAST_AUTH"].strip().lower() not in _OFF
        if "NEUROCAST_PACKAGED_MODELS" in env:
            values["packaged_models"] = env["NEUROCAST_PACKAGED_MODELS"].strip().lower() not in _OFF
        if env.get("NEUROCAST_CORS_ORIGINS"):
            values["cors_origins"] = [
                o.strip() for o in env["NEUROCAST_CORS_ORIGINS"].split(",") if o.strip()
            ]
        if env.get("NEUROCAST_MAX_UPLOAD_MB"):
            values["max_upload_bytes"] = int(float(env["NEUROCAST_MAX_UPLOAD_MB"]) * 1024**2)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)
