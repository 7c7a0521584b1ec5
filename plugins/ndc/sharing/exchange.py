"""The direct distributed model: an exchange moves one dataset from a provider agency's database straight into a
consumer agency's database, gated by the dataset's contract (gate 3 = gate 1's contract), without the payload
passing through the hub's storage.

One YAML file per exchange under ``dags/exchanges/`` (:class:`ndc.config.exchanges.ExchangeConfig`, errors name
file and field); the DAG ``exchange_<name>`` runs :func:`run_exchange` (also ``ndc exchange run``) over its data
interval.

What the hub keeps: one ledger row per run (counts, contract name and version, no values), one contract result
(``gate = 'exchange'``), and for every row that did not reach the consumer only its record key, the checks it
failed and a keyed hash of the row (HMAC-SHA256 with ``NDC_EXCHANGE_HASH_KEY``) in
``ndc_meta.exchange_rejections``. Rows are read, validated and written in memory of the task; they are never
logged, returned (the task's XCom is :class:`ExchangeResult`, counts only) or put in an error message.

Delivery is one consumer transaction per run: the consumer sees the whole window or none of it. Reruns and
backfills are idempotent: the consumer's table keeps one row per key (the latest version by incremental column,
then row hash), and a version it already holds is not written again.

The DAG file reads only the config (:mod:`ndc.config.exchanges`); this module, with polars, pandera and the
connectors, loads inside the task.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from ndc.audit.handoff import Handoff, advance_watermark, as_utc, new_run_id, recorded
from ndc.config.exchanges import ExchangeConfig, find_exchange
from ndc.errors import ConfigError, ContractViolation, NdcError, SchemaDriftError
from ndc.settings import EXCHANGE_HASH_KEY_MIN_CHARS, get_settings

if TYPE_CHECKING:
    import polars as pl
    import psycopg

    from ndc.config.sources import TableConfig
    from ndc.contracts import Contract

log = logging.getLogger(__name__)

HASH_KEY_ENV = "NDC_EXCHANGE_HASH_KEY"
DUPLICATE_KEY = "duplicate_key"
_META = ("_ndc_row_hash", "_ndc_run_id", "_ndc_delivered_at")


# --- the contract -----------------------------------------------------------------------------------------------


def check_contract(config: ExchangeConfig) -> Contract:
    """The exchange's contract; its key and incremental column must be contract columns."""
    from ndc.contracts import get_contract

    try:
        contract = get_contract(config.contract)
    except ConfigError as exc:
        raise ConfigError(f"{config.where()}: field 'contract': {exc}") from None
    for name, columns in (("provider.primary_key", config.provider.primary_key),
                          ("provider.incremental_column", [config.provider.incremental_column])):
        missing = [c for c in columns if c not in contract.columns]
        if missing:
            raise ConfigError(f"{config.where()}: field '{name}': {', '.join(missing)} not a column of contract "
                              f"{contract.name} v{contract.version} ({', '.join(contract.columns)})")
    return contract


# --- the job ----------------------------------------------------------------------------------------------------

@dataclass
class ExchangeResult:
    """What a run reports (the Airflow task's XCom): counts and names only, never a value of a row."""

    exchange: str
    run_id: str
    source: str
    target: str
    contract: str
    window_start: str
    window_end: str
    batches: int = 0
    rows_in: int = 0
    rows_delivered: int = 0        # passed the contract and are in the consumer's table (new or already there)
    rows_written: int = 0          # of those, versions the consumer did not hold yet
    rows_rejected: int = 0         # failed the contract, or lost to a newer version of their key (hub: key + hash)
    rows_repaired: int = 0
    failed_by_check: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def hash_key() -> bytes:
    key = get_settings().exchange_hash_key  # a set key shorter than the minimum fails there, naming its length
    if key is None:
        raise ConfigError(f"environment variable {HASH_KEY_ENV} must be set to a secret of at least "
                          f"{EXCHANGE_HASH_KEY_MIN_CHARS} characters: the hub keeps rejected rows of an exchange only "
                          "as a keyed hash (HMAC-SHA256) made with it")
    return key.encode("utf-8")


def row_hmacs(frame: pl.DataFrame, columns: list[str], key: bytes) -> list[str]:
    """HMAC-SHA256 (hex) of each row's canonical text over ``columns`` (the text :mod:`ndc.landing.rowhash` hashes)."""
    import polars as pl

    from ndc.landing.rowhash import _text

    if frame.is_empty():
        return []
    texts = frame.select(pl.concat_str([_text(c, frame.schema[c]) for c in columns], separator="|")
                         .cast(pl.Binary)).to_series().to_list()
    return [hmac.new(key, text, hashlib.sha256).hexdigest() for text in texts]


def _record_keys(frame: pl.DataFrame, primary_key: list[str]) -> pl.Series:
    import polars as pl

    return frame.select(pl.concat_str([pl.col(c).cast(pl.String) for c in primary_key], separator="|",
                                      ignore_nulls=True)).to_series()


def _safe_error(exc: BaseException, config: ExchangeConfig, contract: Contract | None) -> str:
    """A message about ``exc`` that holds no value of a row (databases and pandera put values in theirs)."""
    if isinstance(exc, SchemaDriftError) or (isinstance(exc, NdcError) and not isinstance(exc, ContractViolation)):
        return f"{type(exc).__name__}: {exc}"  # the platform's own messages name files, fields and columns only
    if isinstance(exc, ContractViolation):
        version = f" v{contract.version}" if contract else ""
        return (f"ContractViolation: contract {config.contract}{version}: check {exc.check} failed for a whole "
                "batch; nothing was delivered")
    state = getattr(exc, "sqlstate", None)
    return f"{type(exc).__name__}{f' (SQLSTATE {state})' if state else ''} during exchange {config.name}"


class ExchangeError(NdcError):
    """An exchange failed; the message holds no row values (see the ledger row and the task's log for where)."""


def _table_config(config: ExchangeConfig) -> TableConfig:
    from ndc.config.sources import TableConfig

    p = config.provider
    return TableConfig(name=p.table, source_schema=p.schema_name, source_table=p.table,
                       primary_key=p.primary_key, incremental_column=p.incremental_column, contract=config.contract)


def _open_provider(url: str):
    from urllib.parse import urlsplit

    scheme = urlsplit(url).scheme
    if scheme == "postgresql":
        from ndc.extract.connectors.postgres import PostgresConnector

        return PostgresConnector(url)
    if scheme == "mysql":
        from ndc.extract.connectors.mysql import MySQLConnector

        return MySQLConnector(url)
    raise ConfigError(f"exchange providers are PostgreSQL or MySQL/MariaDB databases, not {scheme}://")


def _relation_name(url: str, *parts: str) -> str:
    """``<database>.<schema>.<table>``: where rows came from or went, without host or credentials."""
    from ndc.warehouse.connections import database_of

    return ".".join([database_of(url), *parts])


def _consumer_url(config: ExchangeConfig, warehouse_url: str) -> str:
    from urllib.parse import urlsplit

    from ndc.warehouse import connections

    url = connections.resolve(config.consumer.conn_id)
    if not url.startswith("postgresql:"):
        raise ConfigError(f"{config.where()}: field 'consumer.conn_id': {connections.env_name(config.consumer.conn_id)}"
                          " must point at a PostgreSQL database")
    mine, hub = urlsplit(url), urlsplit(warehouse_url)
    if (mine.hostname, mine.port or 5432, mine.path) == (hub.hostname, hub.port or 5432, hub.path):
        raise ConfigError(f"{config.where()}: field 'consumer.conn_id': the consumer's database is the hub's "
                          "warehouse; a direct exchange never stores its rows in the hub")
    return url


class _Delivery:
    """The consumer side of one run, in one transaction: passing rows are COPied into a temp stage; at the end the
    latest version per key is upserted and the losing versions are handed back (key and HMAC only)."""

    def __init__(self, conn: psycopg.Connection, config: ExchangeConfig, contract: Contract, run_id: str) -> None:
        from psycopg import sql

        from ndc.extract.drift import LANDING_TYPES, family_of
        from ndc.identifiers import column_list, ident

        self.conn, self.config, self.contract, self.run_id = conn, config, contract, run_id
        self.columns = list(contract.columns)
        self.key = config.provider.primary_key
        c = config.consumer
        self.table = ident(c.schema_name, c.table)
        types = sql.SQL(", ").join(sql.SQL("{} {}").format(ident(n), sql.SQL(LANDING_TYPES[family_of(t)]))
                                   for n, t in contract.columns.items())
        conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"ndc_exchange:{config.name}",))
        conn.execute(sql.SQL("create schema if not exists {}").format(ident(c.schema_name)))
        conn.execute(sql.SQL("create table if not exists {} ({}, _ndc_row_hash text not null, _ndc_run_id text not "
                             "null, _ndc_delivered_at timestamptz not null, primary key ({}))").format(
            self.table, types, column_list(self.key)))
        conn.execute(sql.SQL("create temp table _ndc_exchange_stage ({}, _ndc_row_hash text not null, "
                             "_ndc_row_hmac text not null) on commit drop").format(types))

    def stage(self, passed: pl.DataFrame) -> None:
        import io

        from psycopg import sql

        from ndc.identifiers import column_list

        if passed.is_empty():
            return
        buffer = io.BytesIO()
        passed.select([*self.columns, "_ndc_row_hash", "_ndc_row_hmac"]).write_csv(buffer, include_header=False)
        statement = sql.SQL("copy _ndc_exchange_stage ({}) from stdin (format csv)").format(
            column_list([*self.columns, "_ndc_row_hash", "_ndc_row_hmac"]))
        with self.conn.cursor().copy(statement) as copy:
            copy.write(buffer.getbuffer())

    def merge(self) -> tuple[int, int, list[tuple[str, str]]]:
        """(rows delivered, versions written, losers as (record key, hmac)) — one row per key wins: the latest by
        incremental column, then row hash; the consumer's row is replaced only by a later version."""
        from psycopg import sql

        from ndc.identifiers import column_list, ident

        key, inc = column_list(self.key), ident(self.config.provider.incremental_column)
        self.conn.execute(sql.SQL(
            "create temp table _ndc_exchange_ranked on commit drop as select *, row_number() over (partition by {key}"
            " order by {inc} desc, _ndc_row_hash desc) as _ndc_rank from _ndc_exchange_stage").format(key=key, inc=inc))
        updates = sql.SQL(", ").join(sql.SQL("{0} = excluded.{0}").format(ident(c))
                                     for c in [*self.columns, *_META] if c not in self.key)
        written = self.conn.execute(sql.SQL(
            "insert into {table} as t ({cols}, _ndc_row_hash, _ndc_run_id, _ndc_delivered_at)"
            " select {cols}, _ndc_row_hash, %s, clock_timestamp() from _ndc_exchange_ranked where _ndc_rank = 1"
            " on conflict ({key}) do update set {updates}"
            " where (excluded.{inc}, excluded._ndc_row_hash) > (t.{inc}, t._ndc_row_hash)").format(
            table=self.table, cols=column_list(self.columns), key=key, updates=updates, inc=inc),
            (self.run_id,)).rowcount
        delivered = self.conn.execute("select count(*) from _ndc_exchange_ranked where _ndc_rank = 1").fetchone()[0]
        record_key = sql.SQL(", ").join(sql.SQL("{}::text").format(ident(c)) for c in self.key)
        losers = self.conn.execute(sql.SQL("select concat_ws('|', {}), _ndc_row_hmac from _ndc_exchange_ranked"
                                           " where _ndc_rank > 1").format(record_key)).fetchall()
        return delivered, written, losers


def _record_rejections(hub: psycopg.Connection, config: ExchangeConfig, contract: Contract, run_id: str,
                       rows: list[tuple[str, list[str], str]]) -> None:
    """Key, checks and keyed hash of rows that were not delivered; a rejection known from an earlier run of the
    same row is kept once."""
    if not rows:
        return
    with hub.cursor() as cur:
        cur.executemany(
            "insert into ndc_meta.exchange_rejections (exchange, record_key, checks, row_hmac, contract_name,"
            " contract_version, run_id) values (%s, %s, %s, %s, %s, %s, %s)"
            " on conflict (exchange, row_hmac) do nothing",
            [(config.name, k, checks, digest, contract.name, contract.version, run_id) for k, checks, digest in rows])


class _Run:
    """The state of one run: counts, and rejections to record in the hub."""

    def __init__(self, config: ExchangeConfig, contract: Contract, key: bytes, result: ExchangeResult) -> None:
        from collections import Counter

        self.config, self.contract, self.key, self.result = config, contract, key, result
        self.failed: Counter = Counter()
        self.rejections: list[tuple[str, list[str], str]] = []

    def gate(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Validate one batch; returns its passing rows with their row hash and HMAC; rejected rows leave only
        key, checks and HMAC."""
        import polars as pl

        from ndc.contracts.validation import reject_null_keys, validate
        from ndc.landing.rowhash import row_hashes

        columns = list(self.contract.columns)
        result = validate(frame, self.contract)
        passed, rejected = reject_null_keys(result, self.config.provider.primary_key)
        self.result.rows_in += passed.height + rejected.height
        self.result.rows_repaired += result.repaired
        if rejected.height:
            checks = rejected.get_column("_checks").to_list()
            for row_checks in checks:
                self.failed.update(row_checks)
            keys = _record_keys(rejected, self.config.provider.primary_key).to_list()
            digests = row_hmacs(rejected, columns, self.key)
            self.rejections.extend(zip(keys, checks, digests, strict=True))
            self.result.rows_rejected += rejected.height
        return passed.with_columns(row_hashes(passed, columns),
                                   pl.Series("_ndc_row_hmac", row_hmacs(passed, columns, self.key), dtype=pl.String))


def run_exchange(exchange: ExchangeConfig | str, start: datetime, end: datetime, run_id: str | None = None,
                 settings=None) -> ExchangeResult:
    """Deliver the provider's rows of ``[start - lookback, end)`` that pass the contract to the consumer.

    Writes one ledger row (``kind = 'exchange'``) and one contract result (``gate = 'exchange'``) in the hub, also
    when the run fails (then it raises an :class:`ExchangeError` whose message holds no row values).
    """
    from ndc.settings import get_settings
    from ndc.warehouse import connections, database

    settings = settings or get_settings()
    config = exchange if isinstance(exchange, ExchangeConfig) else find_exchange(exchange)
    key = hash_key()
    contract = check_contract(config)
    start, end = as_utc(start), as_utc(end)
    window = (start - config.lookback, end)
    run_id = run_id or new_run_id()
    provider_url = connections.source_url(config.provider.conn_id, config.provider.engine)
    consumer_url = _consumer_url(config, settings.warehouse_url)
    p, c = config.provider, config.consumer
    source = _relation_name(provider_url, *([p.schema_name] if provider_url.startswith("postgresql:") else []),
                            p.table)
    result = ExchangeResult(exchange=config.name, run_id=run_id, source=source,
                            target=_relation_name(consumer_url, c.schema_name, c.table),
                            contract=f"{contract.name} v{contract.version}", window_start=window[0].isoformat(),
                            window_end=window[1].isoformat())
    run = _Run(config, contract, key, result)
    handoff = Handoff(kind="exchange", source=result.source, target=result.target, run_id=run_id,
                      interval=(start, end), contract=contract, gate="exchange", dataset=config.dataset)
    with database.connect(settings.warehouse_url) as hub:
        database.ensure_meta(hub)
        try:
            with recorded(hub, handoff):
                try:
                    _deliver(run, provider_url, consumer_url, window, settings.batch_bytes)
                    with hub.transaction():
                        _record_rejections(hub, config, contract, run_id, run.rejections)
                        advance_watermark(hub, "exchange", config.name, end, run_id)
                except Exception as exc:
                    handoff.error = _safe_error(exc, config, contract)
                    handoff.blocked = handoff.error if isinstance(exc, ContractViolation) else None
                    log.error("exchange %s run %s failed: %s", config.name, run_id, handoff.error)
                    raise
                finally:
                    result.failed_by_check = dict(run.failed)
                    result.seconds = round(handoff.seconds, 3)
                    _count(handoff, run, window)
        except Exception:
            if handoff.error is None:
                raise
            raise ExchangeError(f"exchange {config.name} run {run_id}: {handoff.error}") from None
    log.info("exchange %s done: %s", config.name, asdict(result))
    return result


def _deliver(run: _Run, provider_url: str, consumer_url: str, window: tuple[datetime, datetime],
             batch_bytes: int) -> None:
    from contextlib import closing

    from ndc.extract.connectors.base import ExtractRequest
    from ndc.extract.drift import check_drift
    from ndc.warehouse import database

    config, contract, result = run.config, run.contract, run.result
    table = _table_config(config)
    request = ExtractRequest(table=table, columns=list(contract.columns), contract_schema=contract.columns,
                             window=window, batch_bytes=batch_bytes)
    with closing(_open_provider(provider_url)) as provider, database.connect(consumer_url) as out:
        check_drift(f"{config.provider.conn_id} (exchange {config.name})", table.name, contract,
                    provider.column_sets(table, request))
        delivery = _Delivery(out, config, contract, run.result.run_id)
        for chunk in provider.chunks(request):
            result.batches += 1
            delivery.stage(run.gate(chunk.frame))
            log.info("exchange %s batch %d: %d rows in so far, %d rejected", config.name, result.batches,
                     result.rows_in, result.rows_rejected)
        delivered, written, losers = delivery.merge()
        out.commit()  # the whole window reaches the consumer at once, or nothing of it
    result.rows_delivered, result.rows_written = delivered, written
    if losers:
        run.failed[DUPLICATE_KEY] += len(losers)
        run.rejections.extend((k, [DUPLICATE_KEY], digest) for k, digest in losers)
        result.rows_rejected += len(losers)
    log.info("exchange %s delivered %d rows (%d new versions), %d not delivered", config.name, delivered, written,
             result.rows_rejected)


def _count(handoff: Handoff, run: _Run, window: tuple[datetime, datetime]) -> None:
    """The run's figures as its ledger row and contract result report them (no payload: the hub keeps none)."""
    result, config = run.result, run.config
    handoff.rows_in, handoff.rows_quarantined = result.rows_in, result.rows_rejected
    handoff.rows_loaded = 0 if handoff.error else result.rows_delivered
    handoff.failed_by_check = run.failed
    handoff.details = {
        "exchange": config.name, "provider_agency": config.provider_agency, "consumer_agency": config.consumer_agency,
        "purpose": config.purpose, "legal_basis": config.legal_basis, "batches": result.batches,
        "rows_written": 0 if handoff.error else result.rows_written, "rows_repaired": result.rows_repaired,
        "failed_by_check": result.failed_by_check, "window_start": window[0], "window_end": window[1],
        "payload_in_hub": False}


