"""Settings read from the environment, in one place.

| variable | meaning | default |
|---|---|---|
| ``NDC_WAREHOUSE_URL`` | the hub's warehouse (PostgreSQL URL) | the embedded server (``ndc.warehouse.embedded``) |
| ``NDC_SOURCES_DIR`` | folder of source YAML files | ``dags/sources`` of this repository |
| ``NDC_DATA_DIR`` | where the platform keeps files (embedded server, manifests) | ``/var/tmp/ndc-<user>`` |
| ``NDC_BATCH_BYTES`` | size of one streamed extract batch | 16 MiB |
| ``NDC_RETENTION_DAYS`` | days quarantine rows and superseded landing history are kept (``ndc purge``) | 730 |
| ``NDC_HTTP_ATTEMPTS`` | times an API page is requested before the extract fails (HTTP connector) | 8 |
| ``AIRFLOW_CONN_<ID>`` | a source connection, Airflow's URI or JSON format | see :mod:`ndc.warehouse.connections` |
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from pathlib import Path

from ndc.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_EMBEDDED_PORT = 54329
DEFAULT_BATCH_BYTES = 16 * 1024 * 1024
DEFAULT_RETENTION_DAYS = 730  # personal data in quarantine and landing history (see ndc.audit.retention)
DEFAULT_HTTP_ATTEMPTS = 8


def _int_setting(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r}: expected a whole number") from None
    if value < minimum:
        raise ConfigError(f"environment variable {name}={value}: expected at least {minimum}")
    return value


@dataclass(frozen=True)
class Settings:
    warehouse_url: str
    sources_dir: Path
    data_dir: Path
    batch_bytes: int
    retention_days: int = DEFAULT_RETENTION_DAYS
    http_attempts: int = DEFAULT_HTTP_ATTEMPTS

    @classmethod
    def from_env(cls) -> Settings:
        # Outside any 0700 home folder, so the embedded server's system user can reach it (see docs).
        data_dir = os.environ.get("NDC_DATA_DIR") or f"/var/tmp/ndc-{getpass.getuser()}"  # noqa: S108
        return cls(
            # Unset means the embedded server (started by `ndc` commands through ndc.warehouse.embedded).
            warehouse_url=os.environ.get("NDC_WAREHOUSE_URL") or (
                f"postgresql://postgres@127.0.0.1:{os.environ.get('NDC_EMBEDDED_PORT') or DEFAULT_EMBEDDED_PORT}/ndc"),
            sources_dir=Path(os.environ.get("NDC_SOURCES_DIR") or REPO_ROOT / "dags" / "sources"),
            data_dir=Path(data_dir),
            batch_bytes=_int_setting("NDC_BATCH_BYTES", DEFAULT_BATCH_BYTES, minimum=1024),
            retention_days=_int_setting("NDC_RETENTION_DAYS", DEFAULT_RETENTION_DAYS, minimum=1),
            http_attempts=_int_setting("NDC_HTTP_ATTEMPTS", DEFAULT_HTTP_ATTEMPTS, minimum=1),
        )


def get_settings() -> Settings:
    """Settings as the environment says now (cheap; re-read on every call so tests can change them)."""
    return Settings.from_env()
