"""Connections reach the core as URLs read from the environment, in Airflow's own formats.

``AIRFLOW_CONN_<ID>`` holds either a URI (``postgres://user:pass@host:5432/db``) or Airflow's JSON form
(``{"conn_type": "postgres", "host": ..., "login": ..., "password": ..., "schema": ..., "port": ...}``), so one
setting serves a DAG, the CLI and the tests. Nothing here imports Airflow.

When a source connection is not set, a simulated source is assumed to live beside the warehouse: the same
server, in a database named after the connection id. That is the development default; deployments set
``AIRFLOW_CONN_<ID>``.
"""

from __future__ import annotations

import json
import os
from urllib.parse import quote, urlsplit, urlunsplit

from ndc.errors import ConfigError
from ndc.settings import get_settings

_SCHEMES = {"postgres": "postgresql", "postgresql": "postgresql", "mysql": "mysql", "mariadb": "mysql",
            "http": "http", "https": "https", "file": "file"}


def env_name(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def _from_json(conn_id: str, raw: str) -> str:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{env_name(conn_id)}: not a URI and not valid JSON ({exc})") from None
    scheme = _SCHEMES.get(str(data.get("conn_type", "")).lower())
    if scheme is None:
        raise ConfigError(f"{env_name(conn_id)}: field conn_type={data.get('conn_type')!r} is not supported")
    auth = ""
    if data.get("login"):
        auth = quote(str(data["login"]), safe="")
        if data.get("password"):
            auth += ":" + quote(str(data["password"]), safe="")
        auth += "@"
    host = data.get("host") or "localhost"
    port = f":{data['port']}" if data.get("port") else ""
    return f"{scheme}://{auth}{host}{port}/{data.get('schema') or ''}"


def normalise_url(url: str) -> str:
    parts = urlsplit(url)
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise ConfigError(f"connection URL scheme {parts.scheme!r} is not supported")
    return urlunsplit((scheme, *parts[1:]))


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def with_user(url: str, user: str) -> str:
    """``url`` for another login role on the same server and database, without a password (a server that
    trusts loopback: the embedded one and the test servers; a deployment gives each login its own URL)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"{quote(user, safe='')}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def database_of(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def resolve(conn_id: str) -> str:
    """The URL of connection ``conn_id``: ``AIRFLOW_CONN_<ID>`` if set, else the simulated-source default."""
    raw = os.environ.get(env_name(conn_id))
    if raw:
        raw = raw.strip()
        return _from_json(conn_id, raw) if raw.startswith("{") else normalise_url(raw)
    return with_database(get_settings().warehouse_url, conn_id)


def source_url(conn_id: str, engine: str) -> str:
    """A source's URL: ``AIRFLOW_CONN_<ID>`` if set, else the development default for its engine.

    SQL engines default to a database beside the warehouse (so a MariaDB source falls back to PostgreSQL when
    no MariaDB is configured); file drops default to ``$NDC_DATA_DIR/drops/<conn_id>``; an HTTP source has no
    default and must be configured.
    """
    if os.environ.get(env_name(conn_id)) or engine in ("postgresql", "mysql"):
        return resolve(conn_id)
    if engine == "files":
        return (get_settings().data_dir / "drops" / conn_id).as_uri()
    raise ConfigError(f"connection {conn_id}: set {env_name(conn_id)} (e.g. http://:<token>@127.0.0.1:8765/)")


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
    return urlunsplit((parts.scheme, netloc, *parts[2:]))
