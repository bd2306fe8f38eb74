"""Settings of the decoding service, read from ``NEUROCAST_*`` environment variables.

Every setting can be given explicitly to :class:`Settings` (the ``neurocast serve`` options do
that); whatever is not given comes from the environment, then from the defaults:

================================== ==========================================================
``NEUROCAST_HOST``                 interface to bind (default ``127.0.0.1``)
``NEUROCAST_PORT``                 TCP port (default 8000)
``NEUROCAST_TOKEN``                bearer token clients must send (generated when unset)
``NEUROCAST_AUTH``                 ``off`` disables auth; refused unless bound to loopback
``NEUROCAST_MODELS_DIR``           directory of model artifacts (``*.onnx``)
``NEUROCAST_PACKAGED_MODELS``      ``off`` hides the models shipped with the package
``NEUROCAST_DATA_ROOT``            directory whose files ``POST /v1/decode`` and replay
                                   sessions may read by path (unset: no path access)
``NEUROCAST_CORS_ORIGINS``         comma-separated origins allowed by CORS (default none)
``NEUROCAST_MAX_UPLOAD_MB``        upload size limit in MiB (default 512)
``NEUROCAST_MAX_SESSIONS``         sessions that may exist at once (default 16)
``NEUROCAST_WS_QUEUE``             messages buffered per WebSocket client (default 256)
``NEUROCAST_WS_IDLE_TIMEOUT_S``    a client that accepts nothing for this long while messages
                                   wait for it is closed with 1008 (default 60)
``NEUROCAST_DOCS``                 ``auth`` (default): /docs, /redoc and /openapi.json need the
                                   token when auth is on; ``public``; ``off``
``NEUROCAST_STATE_DIR``            where jobs, their results and session definitions are kept
                                   (default ``~/.cache/neurocast/state``)
``NEUROCAST_RESTORE_SESSIONS``     ``off``: do not restart the sessions of the previous run
``NEUROCAST_JOB_WORKERS``          batch jobs decoded at once (default 1)
``NEUROCAST_MAX_QUEUED_JOBS``      jobs waiting for a worker before 429 (default 16)
``NEUROCAST_SOURCE_LOST_AFTER_S``  a source silent this long gets a reason in ``error``
                                   (default 10)
``NEUROCAST_THREADS``              intra-op threads per model (default ``min(4, CPUs)``)
``NEUROCAST_CACHE_DIR``            cache of the simulator's forward solutions
                                   (default ``~/.cache/neurocast``)
================================== ==========================================================

The Python client reads ``NEUROCAST_TOKEN`` too, as its default token.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, SettingsConfigDict

from neurocast.hosts import is_loopback

_OFF = {"off", "0", "false", "no", "disabled"}
DocsMode = Literal["auth", "public", "off"]
#: Where the simulator reads its cache folder (it runs without the service's settings).
CACHE_DIR_VARIABLE = "NEUROCAST_CACHE_DIR"


class Settings(BaseSettings):
    """Configuration of one service instance.

    Parameters
    ----------
    host, port : str, int
        Where ``neurocast serve`` binds.
    token : SecretStr | None
        Bearer token required on REST and WebSocket calls. When auth is on and no token is
        given, a random one is generated (see :attr:`effective_token`).
    auth : bool
        False disables authentication; only allowed when ``host`` is a loopback address. In
        the environment anything but ``off``, ``0``, ``false``, ``no`` or ``disabled`` keeps it on.
    models_dir : Path | None
        Directory searched for model artifacts, besides the packaged ones.
    packaged_models : bool
        Also offer the models shipped with the package (the demo models).
    data_root : Path | None
        Files under this directory may be decoded by path and replayed by sessions; anything
        resolving outside it is refused. None disables path access.
    cors_origins : list of str
        Origins allowed to call the API from a browser (``["*"]`` for any); comma-separated
        in the environment.
    max_upload_bytes : int
        Largest accepted upload (request body) in bytes.
    max_upload_mb : float | None
        The same limit in MiB (``NEUROCAST_MAX_UPLOAD_MB``); replaces ``max_upload_bytes``.
    max_sessions : int
        Sessions that may exist at once, running or not.
    ws_queue_size : int
        Messages buffered per WebSocket client; when full the oldest is dropped
        (``NEUROCAST_WS_QUEUE``).
    status_interval_s : float
        Period of the ``status`` messages sent to subscribers, in seconds.
    session_open_wait_s : float
        How long ``POST /v1/sessions`` waits for the source to open before answering.
    ws_idle_timeout_s : float
        A WebSocket client that accepts no data for this long while messages wait for it is
        closed with code 1008 (``NEUROCAST_WS_IDLE_TIMEOUT_S``); until then it only loses its
        oldest messages.
    ws_subscribe_timeout_s : float
        How long a new WebSocket client has to send its first ``subscribe`` message.
    docs : {"auth", "public", "off"}
        ``auth``: ``/docs``, ``/redoc`` and ``/openapi.json`` need the token whenever auth is
        on; ``public``: they are open; ``off``: they are not served.
    state_dir : Path
        Where batch jobs, their results and the definitions of live sessions are written, so
        that they survive a restart (default ``$XDG_CACHE_HOME/neurocast/state``, i.e.
        ``~/.cache/neurocast/state``).
    restore_sessions : bool
        Start again, at startup, the sessions that existed when the server last stopped.
    source_lost_after_s : float
        A session whose source has delivered nothing for this long says so in ``error`` (its
        state stays ``stalled`` and it keeps waiting for the source).
    max_jobs : int
        Finished batch jobs kept (oldest results are discarded beyond this).
    job_workers : int
        Batch jobs decoded at once.
    max_queued_jobs : int
        Jobs waiting for a worker; one more is refused with 429 and ``Retry-After``.
    threads : int | None
        Intra-op threads of each model the service loads (None: the runtime's default).
    cache_dir : Path | None
        Folder of the simulator's cached forward solutions (None: its default).
    ray : bool
        Run each session in its own Ray actor (``neurocast serve --ray``; the cluster's
        options are the ``NEUROCAST_RAY_*`` variables of
        :class:`neurocast.server.cluster.settings.ClusterSettings`). Needs ``neurocast[ray]``.
    """

    model_config = SettingsConfigDict(
        env_prefix="NEUROCAST_",
        env_ignore_empty=True,
        extra="forbid",
        validate_by_name=True,
        validate_by_alias=True,
    )

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    token: SecretStr | None = None
    auth: bool = True
    models_dir: Path | None = None
    packaged_models: bool = True
    data_root: Path | None = None
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_upload_bytes: int = Field(512 * 1024**2, gt=0)
    max_upload_mb: float | None = Field(None, gt=0, exclude=True)
    max_sessions: int = Field(16, ge=1)
    ws_queue_size: int = Field(
        256, ge=1, validation_alias=AliasChoices("NEUROCAST_WS_QUEUE", "NEUROCAST_WS_QUEUE_SIZE")
    )
    status_interval_s: float = Field(1.0, gt=0)
    session_open_wait_s: float = Field(10.0, ge=0)
    ws_idle_timeout_s: float = Field(60.0, gt=0)
    ws_subscribe_timeout_s: float = Field(30.0, gt=0)
    docs: DocsMode = "auth"
    state_dir: Path = Field(default_factory=lambda: default_state_dir())
    restore_sessions: bool = True
    source_lost_after_s: float = Field(10.0, gt=0)
    max_jobs: int = Field(64, ge=1)
    job_workers: int = Field(1, ge=1)
    max_queued_jobs: int = Field(16, ge=0)
    threads: int | None = Field(None, ge=1)
    cache_dir: Path | None = None
    ray: bool = False

    _generated: bool = PrivateAttr(False)

    @field_validator("auth", "packaged_models", "restore_sessions", mode="before")
    @classmethod
    def _switch(cls, value: Any) -> Any:
        # an environment switch is on unless explicitly turned off
        if isinstance(value, str):
            return value.strip().lower() not in _OFF
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [o.strip() for o in value.split(",") if o.strip()]
        return value

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
        if self.max_upload_mb is not None:
            self.max_upload_bytes = int(self.max_upload_mb * 1024**2)
        return self

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

    def export_cache_dir(self) -> None:
        """Hand :attr:`cache_dir` to the simulator sources, which read it from the environment."""
        if self.cache_dir is not None:
            os.environ[CACHE_DIR_VARIABLE] = str(self.cache_dir)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from ``NEUROCAST_*`` variables, with explicit ``overrides`` taking precedence.

        Parameters
        ----------
        env : mapping | None
            The environment to read (default ``os.environ``); a given mapping is read instead
            of the process environment, not on top of it.
        **overrides
            Values that replace what the environment says (None values are ignored).
        """
        given = {k: v for k, v in overrides.items() if v is not None}
        if env is None:
            return cls(**given)  # type: ignore[arg-type]
        values = _MappingSource(cls, env)()
        return cls.model_validate({**values, **given})


def default_state_dir() -> Path:
    """``$XDG_CACHE_HOME/neurocast/state``, or ``~/.cache/neurocast/state``."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "neurocast" / "state"


class _MappingSource(EnvSettingsSource):
    """The settings' environment source, reading a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {
            name if self.case_sensitive else name.lower(): value
            for name, value in self._environ.items()
            if value != "" or not self.env_ignore_empty
        }
