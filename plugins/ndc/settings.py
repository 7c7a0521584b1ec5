"""Settings read from the environment, in one place.

Every ``NDC_*`` variable of the platform is declared here once, as an attribute of :class:`Settings`: its name,
meaning, default and parser. :func:`get_settings` takes the environment as it is at the call; each setting is
parsed when it is first asked for, so nothing is read at import time and a bad value fails only the work that
needs it. An unset or blank variable means its default. A bad value raises :class:`~ndc.errors.ConfigError`
naming the variable and the value (a URL without its credentials, path or query; a secret by its length only).

Read elsewhere on purpose: ``AIRFLOW_CONN_<CONN_ID>`` (a source connection, looked up by computed name in
:mod:`ndc.warehouse.connections`) and the tooling's own variables (``ndc_lab``). Processes the platform starts
get their environment here too: :func:`dbt_environment` adds the ``NDC_DBT_*`` variables that
``dbt_project/profiles.yml`` reads.

The table below is generated from the declarations (``python -m ndc.settings`` prints it); the README's settings
table is the same table (``tests/test_settings.py`` compares them).
"""

from __future__ import annotations

import getpass
import math
import os
import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ndc.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_EMBEDDED_PORT = 54329
DEFAULT_BATCH_BYTES = 8 * 1024 * 1024  # 16 MiB gave the same speed and ~110 MB more peak memory (issue 20)
DEFAULT_RETENTION_DAYS = 730  # personal data in quarantine and landing history (see ndc.audit.retention)
DEFAULT_HTTP_ATTEMPTS = 8
# Limits on hostile or broken input (issue 21): a page of the API is ~1-2 MB, a drop tens of MB.
DEFAULT_HTTP_MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_HTTP_MAX_PAGES = 100_000
DEFAULT_HTTP_DEADLINE = timedelta(hours=6)
DEFAULT_FILE_MAX_BYTES = 1024 ** 3
DEFAULT_PARQUET_MAX_DECODED_BYTES = 2 * 1024 ** 3
EXCHANGE_HASH_KEY_MIN_CHARS = 16

Parser = Callable[[str, str], Any]  # (variable, its value) -> the setting


def checkout_root() -> Path | None:
    """The repository checkout this package runs from (it lives in ``<checkout>/plugins/ndc``), or None when it is
    installed (site-packages)."""
    package = Path(__file__).resolve().parent
    if package.parent.name == "plugins" and (REPO_ROOT / "dags").is_dir():
        return REPO_ROOT
    return None


# --- one parser per kind ------------------------------------------------------------------------------------------

def _invalid(name: str, shown: str, expected: str) -> ConfigError:
    return ConfigError(f"environment variable {name}={shown!r}: expected {expected}")


def whole_number(minimum: int, maximum: int | None = None) -> Parser:
    expected = (f"a whole number from {minimum} to {maximum}" if maximum is not None
                else f"a whole number of at least {minimum}")

    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise _invalid(name, raw, expected) from None
        if value < minimum or (maximum is not None and value > maximum):
            raise _invalid(name, raw, expected)
        return value

    return parse


def real_number(*, above: float | None = None, at_most: float | None = None) -> Parser:
    limits = ([f"above {above:g}"] if above is not None else []) + ([f"at most {at_most:g}"] if at_most is not None
                                                                     else [])
    expected = f"a number {' and '.join(limits)}".strip()

    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise _invalid(name, raw, expected) from None
        if not math.isfinite(value) or (above is not None and value <= above) or \
                (at_most is not None and value > at_most):
            raise _invalid(name, raw, expected)
        return value

    return parse


def duration(*, minimum_seconds: float = 0.0, allow_minimum: bool = True) -> Parser:
    """A number of seconds (a variable named ``*_SECONDS``), as a timedelta."""
    relation = "at least" if allow_minimum else "more than"
    expected = f"a number of seconds, {relation} {minimum_seconds:g}"

    def parse(name: str, raw: str) -> timedelta:
        try:
            seconds = float(raw)
        except ValueError:
            raise _invalid(name, raw, expected) from None
        too_small = seconds < minimum_seconds if allow_minimum else seconds <= minimum_seconds
        if not math.isfinite(seconds) or too_small:
            raise _invalid(name, raw, expected)
        return timedelta(seconds=seconds)

    return parse


_TRUE, _FALSE = frozenset({"1", "true", "yes", "on"}), frozenset({"0", "false", "no", "off"})


def flag(name: str, raw: str) -> bool:
    word = raw.strip().lower()
    if word not in _TRUE | _FALSE:
        raise _invalid(name, raw, "1, true, yes or on; 0, false, no or off")
    return word in _TRUE


def path(name: str, raw: str) -> Path:
    return Path(raw)  # as given: relative to the working directory, no ~ expansion (the shell's job)


def _url_shown(raw: str) -> str:
    """What an error may show of a URL: scheme and server; credentials, paths and queries can hold secrets."""
    if "://" not in raw:
        return "…" if re.search(r"[@=]", raw) else raw
    parts = urlsplit(raw)
    return f"{parts.scheme}://{parts.hostname or ''}/…"


def url(*schemes: str) -> Parser:
    expected = "a URL starting " + " or ".join(f"{s}://" for s in schemes)

    def parse(name: str, raw: str) -> str:
        if "://" not in raw or urlsplit(raw).scheme.lower() not in schemes:
            raise _invalid(name, _url_shown(raw), expected)
        return raw

    return parse


# A cron expression or an Airflow preset: the one rule for settings and config files (ndc.config.files).
CRON = re.compile(r"^(@(hourly|daily|weekly|monthly|yearly)|(\S+\s+){4}\S+)$")


def cron(name: str, raw: str) -> str:
    if not CRON.match(raw.strip()):
        raise _invalid(name, raw, "a cron expression ('*/30 * * * *') or a preset such as '@hourly'")
    return raw.strip()


def choice(*options: str) -> Parser:
    def parse(name: str, raw: str) -> str:
        if raw not in options:
            raise _invalid(name, raw, " or ".join(options))
        return raw

    return parse


_MODULE_NAME = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def host(name: str, raw: str) -> str:
    """An address to listen on: a host name or an IPv4/IPv6 address."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.:-]{0,252}", raw.strip()):
        raise _invalid(name, raw, "a host name or an IP address, such as 127.0.0.1 or 0.0.0.0")
    return raw.strip()


def module_names(name: str, raw: str) -> tuple[str, ...]:
    """Importable module names, comma-separated."""
    found = tuple(part.strip() for part in raw.split(",") if part.strip())
    bad = [part for part in found if not _MODULE_NAME.match(part)]
    if bad:
        raise _invalid(name, raw, f"importable module names, comma-separated ({', '.join(map(repr, bad))} is not one)")
    return found


def secret(min_chars: int) -> Parser:
    def parse(name: str, raw: str) -> str:
        if len(raw) < min_chars:  # the value itself is never shown
            raise ConfigError(f"environment variable {name}: expected a secret of at least {min_chars} characters, "
                              f"got {len(raw)}")
        return raw

    return parse


POSTGRESQL_URL = url("postgresql", "postgres")


# --- declarations ---------------------------------------------------------------------------------------------------

class Setting:
    """One environment variable: its name, its meaning and default as documented, and how it is parsed. The
    default is a value, or ``derived`` from the other settings."""

    def __init__(self, name: str, parse: Parser, *, meaning: str, shown: str, default: Any = None,
                 derived: Callable[[Settings], Any] | None = None) -> None:
        self.name, self.parse, self.meaning, self.shown = name, parse, meaning, shown
        self.default, self.derived = default, derived
        self.attribute = ""

    def __set_name__(self, owner: type, attribute: str) -> None:
        self.attribute = attribute

    def __get__(self, settings: Settings | None, owner: type | None = None) -> Any:
        if settings is None:
            return self
        raw = settings.raw(self.name)
        if raw is not None:
            value = self.parse(self.name, raw)
        else:
            value = self.derived(settings) if self.derived else self.default
        settings.__dict__[self.attribute] = value  # asked once per Settings object
        return value


def _bundle_folder(name: str) -> Callable[[Settings], Path]:
    return lambda settings: settings.dags_dir / name


def _checkout_folder(name: str) -> Path:
    return (checkout_root() or Path.cwd()) / name


class Settings:
    """The platform's settings as the environment said when this object was made (see :func:`get_settings`)."""

    # --- where things are ---
    dags_dir = Setting(
        "NDC_DAGS_DIR", path, derived=lambda _: _checkout_folder("dags"),
        meaning="the DAG bundle: source, exchange, agency and agreement files, and contract modules "
                "(`contracts/*.py`, e.g. written by `ndc sources new`)",
        shown="`dags/` of the checkout the package runs from, else `./dags`")
    sources_dir = Setting("NDC_SOURCES_DIR", path, derived=_bundle_folder("sources"), meaning="source files",
                          shown="`$NDC_DAGS_DIR/sources`")
    exchanges_dir = Setting("NDC_EXCHANGES_DIR", path, derived=_bundle_folder("exchanges"),
                            meaning="direct-exchange files", shown="`$NDC_DAGS_DIR/exchanges`")
    agencies_dir = Setting("NDC_AGENCIES_DIR", path, derived=_bundle_folder("agencies"), meaning="agency files",
                           shown="`$NDC_DAGS_DIR/agencies`")
    agreements_dir = Setting("NDC_AGREEMENTS_DIR", path, derived=_bundle_folder("agreements"),
                             meaning="agreement files", shown="`$NDC_DAGS_DIR/agreements`")
    dbt_project_dir = Setting(
        "NDC_DBT_PROJECT_DIR", path, derived=lambda _: _checkout_folder("dbt_project"),
        meaning="the dbt project (its `target/manifest.json` is what the conform DAG is drawn from)",
        shown="`dbt_project/` of the checkout the package runs from, else `./dbt_project`")
    contract_modules = Setting(
        "NDC_CONTRACT_MODULES", module_names, default=(),
        meaning="extra contract modules (importable names, comma-separated), beside the built-in ones and the DAG "
                "bundle's `contracts/*.py`", shown="none")
    data_dir = Setting(
        "NDC_DATA_DIR", path, derived=lambda _: Path(f"/var/tmp/ndc-{getpass.getuser()}"),  # noqa: S108
        meaning="embedded server, Airflow home of the demo", shown="`/var/tmp/ndc-<user>` (outside any 0700 folder)")

    # --- the warehouse and who reads it ---
    warehouse_url = Setting(
        "NDC_WAREHOUSE_URL", POSTGRESQL_URL,
        derived=lambda settings: f"postgresql://postgres@127.0.0.1:{settings.embedded_port}/ndc",
        meaning="the warehouse (how tests, CI and deployments run)", shown="unset: the embedded server")
    embedded_port = Setting("NDC_EMBEDDED_PORT", whole_number(1, 65535), default=DEFAULT_EMBEDDED_PORT,
                            meaning="the embedded server's port (127.0.0.1 only)", shown=str(DEFAULT_EMBEDDED_PORT))
    embedded_no_sync = Setting(
        "NDC_EMBEDDED_NO_SYNC", flag, default=False,
        meaning="create the embedded server's data directory without syncing to disk (`initdb --no-sync`: "
                "throwaway servers of tests and fault scenarios)", shown="false")
    operator_url = Setting(
        "NDC_OPERATOR_URL", POSTGRESQL_URL, derived=lambda settings: settings.warehouse_url,
        meaning="the operator's page reads the warehouse with this login (a member of `ndc_operator`); it always "
                "switches to `ndc_operator`, read-only", shown="the warehouse URL")
    ledger_anchor_url = Setting(
        "NDC_LEDGER_ANCHOR_URL", POSTGRESQL_URL,
        meaning="where each ledger row's id and hash are also written (a database the ledger's writer cannot "
                "rewrite: in a deployment another administrator's, reached with an INSERT-only role)",
        shown="`<warehouse database>_ledger_anchor` on the warehouse's server")
    approver_url = Setting(
        "NDC_APPROVER_URL", POSTGRESQL_URL,
        meaning="`ndc agreements approve`: the approver's own connection (a member of `ndc_approver`)", shown="none")
    admin_url = Setting(
        "NDC_ADMIN_URL", POSTGRESQL_URL,
        meaning="`ndc warehouse bootstrap` only: the database administrator's connection (roles, the warehouse "
                "database, the schema's migrations); never given to Airflow", shown="none")
    ledger_anchor_grace = Setting(
        "NDC_LEDGER_ANCHOR_GRACE_SECONDS", duration(minimum_seconds=1), default=timedelta(hours=1),
        meaning="a ledger row not anchored this long after it was recorded makes `ndc ledger verify` fail, and "
                "`ndc ledger anchor` seals it only with `--late`", shown="3600")
    lock_timeout_seconds = Setting(
        "NDC_LOCK_TIMEOUT_SECONDS", whole_number(1), default=5,
        meaning="publish and `ndc agreements apply` wait at most this long for a lock a reader holds, per attempt",
        shown="5")
    lock_attempts = Setting(
        "NDC_LOCK_ATTEMPTS", whole_number(1), default=4,
        meaning="attempts of a publish or apply step that waits for a lock, before it fails with an alert",
        shown="4")
    agency_idle_in_transaction = Setting(
        "NDC_AGENCY_IDLE_IN_TRANSACTION_SECONDS", duration(minimum_seconds=1), default=timedelta(seconds=60),
        meaning="an agency session idle inside a transaction this long is ended by PostgreSQL", shown="60")
    agency_transaction_limit = Setting(
        "NDC_AGENCY_TRANSACTION_SECONDS", duration(minimum_seconds=1), default=timedelta(minutes=15),
        meaning="an agency transaction older than this is ended (by PostgreSQL 17+ itself; before 17, by "
                "`ndc agreements apply` and the publish before they wait for a lock)", shown="900")

    # --- the data-sharing service (`ndc service serve`) ---
    service_url = Setting(
        "NDC_SERVICE_URL", POSTGRESQL_URL, derived=lambda settings: settings.warehouse_url,
        meaning="the sharing service's warehouse login (a member of `ndc_service`: it answers each request as the "
                "calling agency's login, with `SET LOCAL ROLE`)", shown="the warehouse URL")
    service_host = Setting("NDC_SERVICE_HOST", host, default="127.0.0.1",
                           meaning="the address the sharing service listens on", shown="127.0.0.1")
    service_port = Setting("NDC_SERVICE_PORT", whole_number(1, 65535), default=8710,
                           meaning="the sharing service's port", shown="8710")
    service_rate = Setting(
        "NDC_SERVICE_RATE_PER_SECOND", real_number(above=0), default=50.0,
        meaning="requests per second each agency may make to the sharing service (a token bucket per agency); "
                "beyond it, HTTP 429 with `Retry-After`", shown="50")
    service_burst = Setting(
        "NDC_SERVICE_RATE_BURST", whole_number(1), derived=lambda settings: max(1, int(settings.service_rate * 2)),
        meaning="requests an agency may make at once before its rate applies", shown="twice the rate")
    service_pool = Setting("NDC_SERVICE_POOL_SIZE", whole_number(1, 200), default=8,
                           meaning="warehouse connections the sharing service answers with", shown="8")
    service_flush_ms = Setting(
        "NDC_SERVICE_LOG_FLUSH_MS", whole_number(1, 1000), default=5,
        meaning="the request log's group commit: after an idle spell the writer waits this long for more requests "
                "to write together (under load, what arrives during one write is the next); no answer leaves before "
                "its row is committed", shown="5")
    service_batch_requests = Setting(
        "NDC_SERVICE_BATCH_REQUESTS", whole_number(1), default=20_000,
        meaning="requests per sealed batch of the request log (one ledger row holds the batch's SHA-256)",
        shown="20,000")
    service_batch_seconds = Setting(
        "NDC_SERVICE_BATCH_SECONDS", duration(minimum_seconds=0.1), default=timedelta(seconds=10),
        meaning="a batch of the request log is sealed at most this long after its first request", shown="10")
    service_cache_seconds = Setting(
        "NDC_SERVICE_CACHE_SECONDS", duration(minimum_seconds=0), default=timedelta(seconds=2),
        meaning="how long the service trusts what it read of tokens and applied agreements (a revoked token is "
                "refused within this; validity and rows are always the database's, per request)",
        shown="2")

    # --- extract and load ---
    batch_bytes = Setting("NDC_BATCH_BYTES", whole_number(1024), default=DEFAULT_BATCH_BYTES,
                          meaning="size of one streamed extract batch", shown="8 MiB")
    http_attempts = Setting(
        "NDC_HTTP_ATTEMPTS", whole_number(1), default=DEFAULT_HTTP_ATTEMPTS,
        meaning="times an API page is requested (HTTP 429, 500, 502, 503, 504, a dropped connection or a truncated "
                "JSON body are retried with backoff) before the extract fails, naming the page's URL",
        shown=str(DEFAULT_HTTP_ATTEMPTS))
    http_max_body_bytes = Setting(
        "NDC_HTTP_MAX_BODY_BYTES", whole_number(1024), default=DEFAULT_HTTP_MAX_BODY_BYTES,
        meaning="the largest API response body (after gzip/deflate decoding), read as a stream and cut at the cap; "
                "a larger one blocks the extract naming its URL (not retried), nothing of the run merged",
        shown="64 MiB")
    http_max_pages = Setting(
        "NDC_HTTP_MAX_PAGES", whole_number(1), default=DEFAULT_HTTP_MAX_PAGES,
        meaning="pages one API extract may follow; a source still handing out a next cursor after that blocks the "
                "extract (a cursor that repeats blocks it at once), nothing of the run merged",
        shown="100,000")
    http_deadline = Setting(
        "NDC_HTTP_DEADLINE_SECONDS", duration(allow_minimum=False), default=DEFAULT_HTTP_DEADLINE,
        meaning="the whole API extract's deadline (every page, retry and wait, not each request); past it the "
                "extract is blocked naming the page's URL, nothing of the run merged", shown="21600 (6 h)")
    file_max_bytes = Setting(
        "NDC_FILE_MAX_BYTES", whole_number(1), default=DEFAULT_FILE_MAX_BYTES,
        meaning="the largest dropped file (CSV or Parquet, held in memory whole); a larger one blocks the extract "
                "naming it, nothing of the run merged, the file left in place", shown="1 GiB")
    parquet_max_decoded_bytes = Setting(
        "NDC_PARQUET_MAX_DECODED_BYTES", whole_number(1), default=DEFAULT_PARQUET_MAX_DECODED_BYTES,
        meaning="the most a dropped Parquet file may decode to: its footer's uncompressed size and row count are "
                "checked before it is read, the decoded values (dictionary and run-length encodings expanded) "
                "before any of it is staged; over it the extract is blocked naming the file", shown="2 GiB")
    task_retries = Setting(
        "NDC_TASK_RETRIES", whole_number(0), default=2,
        meaning="extract, compare and purge tasks: retries (alerts fire after the last)", shown="2")
    retry_delay = Setting(
        "NDC_RETRY_DELAY_SECONDS", duration(), default=timedelta(seconds=60),
        meaning="extract, compare and purge tasks: the first retry delay (exponential backoff up to 20 min)",
        shown="60")

    # --- conform and publish ---
    conform_nodes = Setting(
        "NDC_CONFORM_NODES", choice("auto", "concurrent", "after"), default="auto",
        meaning="when the conform DAG's model tasks start: `concurrent` (with `dbt.build`, through the scheduler) or "
                "`after` (needed by `airflow dags test`)",
        shown="`auto`: `after` under `airflow dags test`, else `concurrent`")
    conform_schedule = Setting(
        "NDC_CONFORM_SCHEDULE", cron, default="*/30 * * * *",
        meaning="when the conform DAG runs: each scheduled run builds and publishes what the sources loaded since the "
                "last publication feed (none: the run is skipped); a change is published within one period plus "
                "the run's own time", shown="`*/30 * * * *`")
    warehouse_max_loads = Setting(
        "NDC_WAREHOUSE_MAX_LOADS", whole_number(1), default=8,
        meaning="the warehouse's cap on concurrent landing merges, whatever the number of sources and workers "
                "(a load waits for a slot, and says so in its log)", shown="8")
    conform_poll = Setting(
        "NDC_CONFORM_POLL_SECONDS", duration(allow_minimum=False), default=timedelta(seconds=1),
        meaning="how often the triggerer reads dbt's results for the model tasks", shown="1")
    publish_max_row_change = Setting(
        "NDC_PUBLISH_MAX_ROW_CHANGE", real_number(above=0), default=0.5,
        meaning="gate 2: the largest change of a shared relation's row count against the published version "
                "(share; relations under 1,000 rows are exempt)", shown="0.5")
    gate2_batch_rows = Setting("NDC_GATE2_BATCH_ROWS", whole_number(1), default=50_000,
                               meaning="gate 2: rows per validated batch", shown="50,000")

    # --- sharing, retention, alerts ---
    exchange_hash_key = Setting(
        "NDC_EXCHANGE_HASH_KEY", secret(EXCHANGE_HASH_KEY_MIN_CHARS),
        meaning="direct exchanges: the key of the HMAC the hub keeps of each rejected row "
                f"(≥ {EXCHANGE_HASH_KEY_MIN_CHARS} characters)", shown="none (required to run an exchange)")
    retention_days = Setting(
        "NDC_RETENTION_DAYS", whole_number(1), default=DEFAULT_RETENTION_DAYS,
        meaning="quarantine rows and superseded landing-history versions older than this are purged "
                "(`purge_personal_data`)", shown=str(DEFAULT_RETENTION_DAYS))
    alert_webhook = Setting(
        "NDC_ALERT_WEBHOOK", url("http", "https"),
        meaning="alerts (contract failure, stale source, DAG failure) are also POSTed here as JSON (chat, ticketing)",
        shown="unset: stored in `ndc_meta.alerts` and logged")

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        source = os.environ if environ is None else environ
        self._environ = {name: value for name, value in source.items() if name.startswith("NDC_")}

    def raw(self, name: str) -> str | None:
        """The variable's value, or None when it is unset or blank."""
        value = self._environ.get(name)
        return value if value is not None and value.strip() else None

    def is_set(self, name: str) -> bool:
        return self.raw(name) is not None

    @property
    def contracts_dir(self) -> Path:
        """The DAG bundle's contract modules (``<dags>/contracts/*.py``), loaded by the contract registry."""
        return self.dags_dir / "contracts"


def declared() -> tuple[Setting, ...]:
    """Every setting, in the order the table lists them."""
    return tuple(value for value in vars(Settings).values() if isinstance(value, Setting))


def settings_table() -> str:
    """The settings as a markdown table (the README's)."""
    rows = [f"| `{s.name}` | {s.meaning} | {s.shown} |" for s in declared()]
    return "\n".join(["| variable | meaning | default |", "|---|---|---|", *rows])


def get_settings() -> Settings:
    """Settings as the environment says now (cheap; made afresh on every call so tests can change them)."""
    return Settings()


# --- environments of other processes --------------------------------------------------------------------------------

def export_warehouse_url(url: str) -> None:
    """Make ``url`` the warehouse of this process and of every process it starts (dbt, Airflow's): the embedded
    server's URL, once it runs."""
    os.environ["NDC_WAREHOUSE_URL"] = url


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a subprocess starts with: this process's, with ``extra``."""
    return {**os.environ, **(extra or {})}


def dbt_environment(warehouse_url: str | None = None) -> dict[str, str]:
    """The environment of a dbt process: the profile's connection as ``NDC_DBT_*`` (``dbt_project/profiles.yml``
    reads them), from ``warehouse_url`` (default: the warehouse), and no tracking."""
    parts = urlsplit(warehouse_url or get_settings().warehouse_url)
    return child_environment({
        "NDC_DBT_HOST": parts.hostname or "127.0.0.1",
        "NDC_DBT_PORT": str(parts.port or 5432),
        "NDC_DBT_USER": unquote(parts.username or "postgres"),
        "NDC_DBT_PASSWORD": unquote(parts.password or ""),
        "NDC_DBT_DBNAME": parts.path.lstrip("/") or "ndc",
        # Aggregations over millions of rows (province_statistics, identity) sort in memory, not on disk.
        "PGOPTIONS": "-c work_mem=128MB",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
        "DO_NOT_TRACK": "1",
    })


__doc__ = f"{__doc__}\n{settings_table()}\n"

if __name__ == "__main__":
    print(settings_table())
