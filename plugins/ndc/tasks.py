"""The library calls behind DAG tasks and CLI commands: each one is a whole, rerunnable step."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import polars as pl
from psycopg import sql

from ndc.audit.handoff import Handoff, advance_watermark, as_utc, new_run_id, recorded
from ndc.config.sources import SourceConfig, find_source, load_source, source_files
from ndc.contracts import get_contract
from ndc.contracts.validation import GateResult, validate
from ndc.errors import BatchBlockedError, ContractViolation, NdcError, SourceUnavailableError, WarehouseUnavailableError
from ndc.extract.connectors import Chunk, open_connector
from ndc.extract.connectors.base import ExtractRequest
from ndc.extract.drift import check_drift
from ndc.extract.prefetch import prefetch
from ndc.identifiers import ident
from ndc.landing.load import (
    DUPLICATE_KEY,
    SMALL_LOADS,
    LandingTarget,
    RunStats,
    discard_staged,
    ensure_landing,
    loaded_files,
    lock_dataset,
    merge_staged,
    prepare_session,
    previous_load,
    stage_batch,
    take_load_slot,
)
from ndc.landing.rowhash import row_hashes
from ndc.settings import Settings, get_settings
from ndc.warehouse import connections, database

log = logging.getLogger(__name__)
ANALYZE_AFTER_ROWS = 50_000

FULL_REFRESH_START = datetime(1900, 1, 1, tzinfo=UTC)


@dataclass
class ExtractResult:
    dataset: str
    target: str
    run_id: str
    window_start: str
    window_end: str
    batches: int
    rows_in: int
    rows_loaded: int
    rows_quarantined: int
    rows_repaired: int
    rows_new_versions: int
    new_columns: list[str]
    files: list[str]
    seconds_staging: float = 0.0   # read, gate, quarantine and COPY into the stage (batches overlap)
    seconds_merging: float = 0.0   # dedupe, history append and latest-state upsert
    merge_steps: dict[str, float] | None = None  # seconds per merge step


def landing_target(source: SourceConfig, table_name: str) -> LandingTarget:
    table = source.table(table_name)
    return LandingTarget(dataset=f"{source.name}.{table.name}", schema=source.landing_schema, table=table.name,
                         primary_key=tuple(table.primary_key), incremental_column=table.incremental_column,
                         contract=get_contract(table.contract), tombstone_column=table.tombstone_column)


def _gated(chunks: Iterable[Chunk], contract) -> Iterator[tuple[Chunk, GateResult]]:
    """Validate each chunk and give every row its version hash (rejected rows: over their reasons too)."""
    columns = list(contract.columns)
    for chunk in chunks:
        result = validate(chunk.frame, contract)
        result.passed = result.passed.with_columns(row_hashes(result.passed, columns))
        result.rejected = result.rejected.with_columns(row_hashes(result.rejected, [*columns, "_reasons"]))
        yield chunk, result


def _grouped(gated: Iterable[tuple[Chunk, GateResult]], batch_rows: int) -> Iterator[tuple[Chunk, GateResult]]:
    """Consecutive chunks that end dropped files joined into batches of about ``batch_rows``, so a folder of small
    files is not one transaction per file (streamed batches pass as they are). Gated frames have the contract's
    types, so chunks of CSV and Parquet files join."""
    pending: list[tuple[Chunk, GateResult]] = []
    rows = 0
    for chunk, result in gated:
        if not chunk.completes:  # a streamed SQL/API batch, or the first part of a large file: as it is
            if pending:
                yield _join(pending)
                pending, rows = [], 0
            yield chunk, result
            continue
        pending.append((chunk, result))
        rows += result.passed.height + result.rejected.height
        if rows >= batch_rows:
            yield _join(pending)
            pending, rows = [], 0
    if pending:
        yield _join(pending)


def _join(parts: list[tuple[Chunk, GateResult]]) -> tuple[Chunk, GateResult]:
    if len(parts) == 1:
        return parts[0]
    chunks, results = zip(*parts, strict=True)
    result = GateResult(passed=pl.concat([r.passed for r in results]),
                        rejected=pl.concat([r.rejected for r in results]),
                        repaired=sum(r.repaired for r in results))
    chunk = Chunk(frame=result.passed.clear(), completes=[f for c in chunks for f in c.completes],
                  origin=", ".join(c.origin for c in chunks if c.origin))
    return chunk, result


def _stage_chunks(wh, target: LandingTarget, gated: Iterable[tuple[Chunk, GateResult]], run_id: str,
                  window: tuple[datetime, datetime], stats: RunStats, began: float) -> int:
    batches = 0
    for batches, (chunk, result) in enumerate(gated, start=1):
        stats.add(stage_batch(wh, target, result, run_id=run_id, window=window, batch_no=batches,
                              started_at=datetime.now(UTC), completes=chunk.completes))
        stats.files.extend(done.path for done in chunk.completes)
        log.info("%s batch %d staged: %d rows in so far, %d staged, %d rejected (%.1f s)",
                 target.dataset, batches, stats.rows_in, stats.rows_staged, stats.rows_rejected,
                 time.monotonic() - began)
    return batches


def check_row_count(wh, target: LandingTarget, table, stats: RunStats, interval: tuple[datetime, datetime],
                    full_refresh: bool, source_path, engine: str) -> None:
    """Gate 1's whole-batch rule (``row_count_drop`` in the source file): raise BatchBlockedError when this run's
    rows fell by more than ``max_share`` against the last comparable successful load."""
    rule = table.row_count_drop
    if rule is None or (engine == "files" and not stats.files):  # no new file arrived: nothing to compare
        return
    previous = previous_load(wh, target, interval, full_refresh)
    if previous is None or previous[0] < rule.min_previous_rows:
        return
    before, before_run = previous
    drop = 1 - stats.rows_in / before
    if drop > rule.max_share:
        raise BatchBlockedError(
            f"{target.dataset}: {stats.rows_in:,} rows in this run against {before:,} in the last comparable load "
            f"(run {before_run}): a drop of {drop:.1%} is more than row_count_drop.max_share {rule.max_share:.0%} "
            f"({source_path}, tables[{table.name}].row_count_drop); nothing loaded. If the source really shrank, "
            "rerun with accept_row_drop (DAG param, or `ndc extract --accept-row-drop`).",
            dataset=target.dataset, check="row_count_drop")


# SQLSTATEs of a connection that is gone: class 08 (connection exception) and the server shutting down (57P01-03).
_CONNECTION_LOST = ("08", "57P01", "57P02", "57P03")


def lost_connection(exc: BaseException, wh, what: str, source_name: str, source_url: str,
                    warehouse_url: str) -> NdcError | None:
    """An error naming the side that went away when ``exc`` is a lost or refused database connection (not a
    deadlock, a full disk or a timeout, which keep their own message): the warehouse if its session is broken or
    does not answer, else the source (its URL without the password). None for any other error."""
    kinds = {"OperationalError", "InterfaceError"}
    if not any(k.__name__ in kinds for k in type(exc).__mro__):
        return None
    state = getattr(exc, "sqlstate", None)
    if state and not state.startswith(_CONNECTION_LOST):
        return None
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    if not _answers(wh):
        return WarehouseUnavailableError(
            f"{what}: the warehouse {connections.redact(warehouse_url)} went away during the load ({detail}); "
            "nothing of this run was merged — rerun the interval when it is back")
    return SourceUnavailableError(
        f"{what}: the connection to source {source_name} ({connections.redact(source_url) or 'unresolved'}) failed "
        f"or was lost ({detail}); nothing of this run was merged — rerun the interval when the source is back")


def _answers(wh) -> bool:
    """Whether the warehouse session still answers (a rollback, then ``select 1``)."""
    if wh.broken or wh.closed:
        return False
    try:
        if wh.info.transaction_status.name != "IDLE":
            wh.rollback()
        wh.execute("select 1")
    except Exception:  # any failure here means the warehouse is the side that went away
        return False
    return not wh.broken


def extract_table(source: SourceConfig | str, table_name: str, start: datetime, end: datetime,
                  run_id: str | None = None, settings: Settings | None = None,
                  full_refresh: bool = False, accept_row_drop: bool = False) -> ExtractResult:
    """Extract one table's data interval ``[start - lookback, end)``, gate it, and load it into landing.

    Idempotent: re-running an interval changes nothing in landing or quarantine. A files source loads the
    files not loaded before (all of them on ``full_refresh``). Writes one ledger row and one contract result,
    also when it fails (then it re-raises). A whole-batch rule that fails blocks the run: nothing is merged.
    """
    settings = settings or get_settings()
    if isinstance(source, str):
        source = find_source(settings.sources_dir, source)
    target = landing_target(source, table_name)
    table = source.table(table_name)
    start, end = as_utc(FULL_REFRESH_START if full_refresh else start), as_utc(end)
    window = (max(FULL_REFRESH_START, start - source.lookback), end)
    stats = RunStats()
    run = Handoff(kind="extract", source=source.name, target=f"{target.schema}.{target.table}",
                  run_id=run_id or new_run_id(), interval=(start, end), contract=target.contract, gate="landing",
                  dataset=target.dataset, interrupted_note="; nothing of it was merged",
                  # recorded even if the run fails before the row count is checked (which says if it took effect)
                  overrides={"accept_row_drop": {"took_effect": False}} if accept_row_drop else {})
    with database.connect(settings.warehouse_url) as wh:
        database.ensure_meta(wh)
        ensure_landing(wh, target)
        lock_dataset(wh, target)
        # then the warehouse's cap on loads (in this order: a slot holder never waits for another load's lock)
        take_load_slot(wh, settings.warehouse_max_loads, target.dataset)
        prepare_session(wh, target)
        request = ExtractRequest(table=table, columns=target.columns, contract_schema=target.contract.columns,
                                 window=window, batch_bytes=settings.batch_bytes, full_refresh=full_refresh,
                                 skip_files=loaded_files(wh, target.dataset))
        source_url = ""
        with recorded(wh, run):
            try:
                source_url = connections.source_url(source.connection.conn_id, source.connection.engine)
                timing = _extract_and_load(wh, source, source_url, target, request, run, stats, (start, end),
                                           full_refresh, accept_row_drop)
            except Exception as exc:
                lost = lost_connection(exc, wh, f"{source.name}.{table.name}", source.name, source_url,
                                       settings.warehouse_url)
                run.blocked = _discard_if_blocked(wh, target, run.run_id, exc)
                if lost is not None:
                    raise lost from exc
                raise
            finally:
                _count(run, stats, window, full_refresh)
        advance_watermark(wh, "extract", target.dataset, stats.loaded_through, run.run_id)
        if stats.merge.rows_new_versions >= ANALYZE_AFTER_ROWS:
            # Fresh planner statistics before the conform build reads it (autovacuum would come later).
            with database.connect(settings.warehouse_url, autocommit=True) as maintenance:
                # latest state and the partition the versions went to (history's other partitions are unchanged)
                maintenance.execute(sql.SQL("analyze {}, {}").format(
                    ident(target.schema, target.table),
                    ident(target.schema, stats.merge.partition or target.partition(SMALL_LOADS))))
    result = ExtractResult(
        dataset=target.dataset, target=f"{target.schema}.{target.table}", run_id=run.run_id,
        window_start=window[0].isoformat(), window_end=window[1].isoformat(), batches=stats.batches,
        rows_in=stats.rows_in, rows_loaded=stats.loaded, rows_quarantined=stats.quarantined,
        rows_repaired=stats.rows_repaired, rows_new_versions=stats.merge.rows_new_versions,
        new_columns=stats.new_columns, files=stats.files, seconds_staging=round(timing[0], 3),
        seconds_merging=round(timing[1], 3), merge_steps=stats.merge.seconds)
    log.info("%s done: %s", target.dataset, asdict(result))
    return result


def _extract_and_load(wh, source: SourceConfig, source_url: str, target: LandingTarget, request: ExtractRequest,
                      run: Handoff, stats: RunStats, interval: tuple[datetime, datetime],
                      full_refresh: bool, accept_row_drop: bool) -> tuple[float, float]:
    """Stream, gate and stage every batch, check the whole-batch rules, merge. Returns (staging, merging) seconds.
    ``accept_row_drop``: the row-count rule still runs; a drop it would block is let through and recorded."""
    run_id, began = run.run_id, run.began
    table = request.table
    connector = open_connector(source, source_url)
    with closing(connector):
        drift = check_drift(source.name, table.name, target.contract, connector.column_sets(table, request))
        stats.new_columns = drift.new_columns
        # Three stages overlap, each in its own thread, a bounded number of batches apart: the source read of
        # batch N+2, the gate of batch N+1, the COPY of batch N.
        read = prefetch(connector.chunks(request), depth=1)
        gated = _grouped(_gated(read, target.contract), request.batch_rows)
        with closing(read), closing(prefetch(gated)) as gated:  # closed in reverse: the gate first, then the read
            stats.batches = _stage_chunks(wh, target, gated, run_id, request.window, stats, began)
    staged_at = time.monotonic()
    try:
        check_row_count(wh, target, table, stats, interval, full_refresh, source.path, source.connection.engine)
        if accept_row_drop:
            run.override("accept_row_drop", False)
    except BatchBlockedError as exc:
        if not accept_row_drop:
            raise
        log.warning("accept_row_drop: loading anyway: %s", exc)
        run.override("accept_row_drop", True, check=exc.check, rows_in=stats.rows_in)
    stats.merge = merge_staged(wh, target, run_id, stats.staged_by_run())
    stats.failed_by_check[DUPLICATE_KEY] += stats.merge.rows_duplicates + stats.merge.rows_superseded_in_landing
    return staged_at - began, time.monotonic() - staged_at


def _count(run: Handoff, stats: RunStats, window: tuple[datetime, datetime], full_refresh: bool) -> None:
    """The run's figures as its ledger row and gate 1's result report them."""
    run.rows_in, run.rows_loaded, run.rows_quarantined = stats.rows_in, stats.loaded, stats.quarantined
    run.failed_by_check = stats.failed_by_check
    run.rows_failed = stats.rows_rejected if run.blocked else stats.quarantined
    run.details = {"batches": stats.batches, "rows_repaired": stats.rows_repaired, "files": stats.files,
                   "full_refresh": full_refresh, "failed_by_check": dict(stats.failed_by_check),
                   "rows_new_versions": stats.merge.rows_new_versions,
                   "rows_superseded_in_landing": stats.merge.rows_superseded_in_landing,
                   "batches_merged": stats.merge.batches, "new_columns": stats.new_columns,
                   "window_start": window[0], "window_end": window[1]}


def _discard_if_blocked(wh, target: LandingTarget, run_id: str, exc: Exception) -> str | None:
    """A whole-batch rule failed (a contract violation): nothing of this run is merged, now or by the next run.
    Returns what blocked it, or None for any other error."""
    if not isinstance(exc, ContractViolation):
        return None
    if wh.info.transaction_status.name != "IDLE":
        wh.rollback()
    discard_staged(wh, target, run_id)
    return exc.summary  # stored with the contract result: check names and counts, no row values


def conform_sources(asked: list[str] | None, *, scheduled: bool,
                    settings: Settings | None = None) -> tuple[list[str] | None, str]:
    """Which sources a conform run builds for (None: every source), and why: those ``asked`` for (each must be a
    registered source), else for a scheduled run the sources loaded since the last publication (the ledger), else
    every source."""
    from ndc.conform.run_plan import landed_since_publication

    settings = settings or get_settings()
    if asked:
        for name in asked:
            find_source(settings.sources_dir, name)  # a ConfigError names an unknown source
        return sorted(set(asked)), "asked for"
    if not scheduled:
        return None, "a manual run builds what every source feeds"
    with database.connect(settings.warehouse_url) as conn:
        database.ensure_meta(conn)
        return landed_since_publication(conn)


def prepare_conform(*, accept_stale: bool = False, settings: Settings | None = None, run_id: str | None = None,
                    sources: list[str] | None = None, full_refresh: bool = False) -> dict:
    """Before a conform build: a registered source never loaded gets its (empty) landing tables, so the dbt project
    builds on any subset of sources (a table that was loaded once and is now missing is not re-created: the build
    fails on it and publishes nothing); then the source-freshness gate (``ndc.conform.freshness``); then the run's
    plan (``ndc.conform.run_plan``: full or delta, and why; ``sources``: those whose landing tables triggered it).
    Returns the plan, the build schema consumers are not reading (where a full build goes) and the freshness
    report."""
    from ndc.conform import dbt, freshness
    from ndc.conform.publish import inactive_schema
    from ndc.conform.run_plan import plan_run

    settings = settings or get_settings()
    started = datetime.now(UTC)  # gate 2 reconciles the build with landing as of now
    modelled = {s["source_name"] for s in json.loads(dbt.manifest_file().read_text())["sources"].values()}
    with database.connect(settings.warehouse_url) as conn:
        database.ensure_meta(conn)
        # the registered sources the dbt project reads (not every one: thousands feed no shared model yet)
        registered = {p.stem: p for p in source_files(settings.sources_dir)}
        for source in [load_source(registered[name]) for name in sorted(modelled & set(registered))]:
            for table in source.tables:
                target = landing_target(source, table.name)
                # only where missing: ensure_landing's ALTER would queue behind a running extract's merge
                relation = ident(target.schema, target.table).as_string(conn)
                never_loaded = conn.execute(
                    "select to_regclass(%s) is null and not exists (select from ndc_meta.watermarks"
                    " where dataset = %s)", (relation, target.dataset)).fetchone()[0]
                if never_loaded:
                    ensure_landing(conn, target)
        conn.commit()
        report = freshness.gate(freshness.check(conn, dbt.manifest_file()), accept_stale=accept_stale)
        plan = plan_run(conn, run_id=run_id, sources=sources, full_refresh=full_refresh)
        if accept_stale:  # recorded on the run's publish ledger row (the plan travels to publish)
            stale = sorted(f"{r.source}.{r.table}" for r in report if r.status == "error")
            plan.overrides["accept_stale"] = {"took_effect": bool(stale), "tables": stale}
            log.warning("conform run %s: accept_stale given%s", plan.conform_seq,
                        f"; building on stale {', '.join(stale)}" if stale else "; no source was stale")
        log.info("conform run %s: %s (%s)", plan.conform_seq, plan.mode, plan.reason)
        return {"build_schema": inactive_schema(conn), "plan": plan.as_dict(), "started_at": started.isoformat(),
                "freshness": {f"{r.source}.{r.table}": r.status for r in report}}


def publish_build(build: str | dict, run_id: str | None = None, settings: Settings | None = None, *,
                  as_of: datetime | str | None = None, accept_row_change: bool = False) -> dict:
    """Gate 2 and publish of what a conform run built (the conform DAG's last task; also ``ndc conform``):
    ``build`` is the run's plan (``prepare_conform()["plan"]``: a full build is published by a view switch, a delta
    applied in one transaction) or the build schema of a full build made by hand. ``as_of``: when the build
    started."""
    from ndc.conform import dbt
    from ndc.conform.publish import publish, publish_delta
    from ndc.conform.run_plan import RunPlan

    settings = settings or get_settings()
    if isinstance(as_of, str):
        as_of = datetime.fromisoformat(as_of)
    plan = RunPlan.from_dict(build) if isinstance(build, dict) else None
    models = dbt.shared_models()
    with database.connect(settings.warehouse_url) as conn:
        database.ensure_meta(conn)
        if plan and plan.is_delta:
            published = publish_delta(conn, plan, {m: models[m] for m in plan.models}, run_id=run_id, as_of=as_of,
                                      accept_row_change=accept_row_change, deprecations=dbt.deprecations(),
                                      overrides=plan.overrides)
        else:
            published = publish(conn, plan.build_schema if plan else build, models, run_id=run_id, as_of=as_of,
                                accept_row_change=accept_row_change, deprecations=dbt.deprecations(),
                                conform_seq=plan.conform_seq if plan else None,
                                overrides=plan.overrides if plan else None)
    return {"build_schema": published.build_schema, "rows": published.rows,
            "mode": plan.mode if plan else "full", "reason": plan.reason if plan else "built by hand"}


def conform(*, run_id: str | None = None, accept_stale: bool = False, accept_row_change: bool = False,
            full_refresh: bool = False, sources: list[str] | None = None, echo: bool = False,
            settings: Settings | None = None) -> dict:
    """One conform run outside Airflow (``ndc conform``, tests): freshness gate and plan, ``dbt build`` of what the
    plan says, then gate 2 and publish. A failed build publishes nothing."""
    from ndc.conform import dbt
    from ndc.conform.run_plan import RunPlan

    prepared = prepare_conform(accept_stale=accept_stale, settings=settings, run_id=run_id, sources=sources,
                               full_refresh=full_refresh)
    plan = RunPlan.from_dict(prepared["plan"])
    result = dbt.run(["build", *plan.dbt_args()], dbt_vars=plan.dbt_vars(), echo=echo)
    if result.returncode != 0:
        raise NdcError(f"dbt build failed (exit {result.returncode}); nothing published, consumers still read the "
                       f"previous version\n{result.output[-3000:]}")
    published = publish_build(prepared["plan"], run_id=run_id, settings=settings, as_of=prepared["started_at"],
                              accept_row_change=accept_row_change)
    return {**published, "conform_seq": plan.conform_seq, "freshness": prepared["freshness"],
            "dbt_output": result.output}
