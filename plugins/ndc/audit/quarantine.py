"""Quarantine you can act on: see it per dataset and check, read its rows, and replay them after a fix.

Every row a gate rejects is kept in ``quarantine.rows`` with the checks it failed, their reasons and its whole
payload (personal data: the ``quarantine`` schema is readable only by the ``ndc_personal_data`` role).
``quarantine.overview`` sums it per dataset and check: rows, rows not yet replayed, rows a replay loaded, the
oldest and newest, and the age of the oldest.

**Replay** (``ndc quarantine replay``), after a contract fix (the data was right, the rule was wrong) or a
change of the rules' reference data: the dataset's quarantined rows that no replay has loaded yet are rebuilt
from their payload, revalidated with the dataset's *current* contract (``ndc.contracts.validation.validate``), and
those that
now pass are loaded into landing through the extract's own path (``ndc.landing.load.stage_batch`` and
``ndc.landing.load.merge_staged`` under the dataset's lock), so history, latest state and keys behave as for an
extract. Then:

- nothing is deleted: each replayed quarantine row is marked (``replayed_at``, ``replay_run_id``,
  ``replay_outcome`` = ``loaded`` or ``still_failing``) and keeps its checks, reasons and payload as evidence;
- rows that still fail are not quarantined again (no second row, no lost row): only their mark changes;
- ``duplicate_key`` rows are not replayed: they passed their contract and lost to a newer version of their key
  in the same extract window — there is nothing to revalidate;
- a value that could not be cast (check ``value_type(<column>)``) is stored as null in the payload and its raw
  text in the reasons; replay puts the raw text back, so a fixed contract type can read it;
- one ledger row (``kind = replay``) and one contract result (``gate = replay``) record it.

The replay's merge window: each replay stages under its own window, starting at the replay's own clock reading
and zero (or a few microseconds, one per extra version of a key) wide — no extract has such a window, so a
replayed version is never resolved as "the same window" against a landed version. A replayed old version is
appended to history and replaces the latest state only if it is newer (by the incremental column) than what
landing holds; several replayed versions of one key all reach history and the newest is the latest.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import polars as pl
import psycopg
from psycopg import sql

from ndc.audit.handoff import Handoff, ledger_error, new_run_id, recorded
from ndc.contracts.validation import PK_NOT_NULL
from ndc.errors import NdcError
from ndc.identifiers import ident
from ndc.landing.load import (
    DUPLICATE_KEY,
    LandingTarget,
    lock_dataset,
    merge_staged,
    prepare_session,
    stage_batch,
)
from ndc.settings import Settings, get_settings
from ndc.warehouse import database

log = logging.getLogger(__name__)

LOADED, STILL_FAILING = "loaded", "still_failing"
VALUE_TYPE = "value_type("
_REPLAYABLE = "(q.replay_outcome is null or q.replay_outcome = 'still_failing')"


@dataclass
class ReplayResult:
    dataset: str
    run_id: str
    contract_name: str
    contract_version: str
    rows_in: int = 0                # quarantined rows revalidated
    rows_loaded: int = 0            # of them, now in landing
    rows_still_failing: int = 0     # of them, still failing (their quarantine row stays, marked)
    rows_new_versions: int = 0      # versions landing's history did not hold yet
    rows_skipped_duplicate_key: int = 0  # never replayed: they lost to a newer version of their key
    first_id: int | None = None
    last_id: int | None = None
    checks_before: dict[str, int] = field(default_factory=dict)
    checks_now: dict[str, int] = field(default_factory=dict)
    dry_run: bool = False


def target_of(dataset: str, settings: Settings | None = None) -> LandingTarget:
    """The landing target and current contract of ``<source>.<table>``, from the source registry."""
    from ndc import tasks
    from ndc.config.sources import find_source

    settings = settings or get_settings()
    source_name, dot, table = dataset.partition(".")
    if not dot or not table:
        raise NdcError(f"dataset {dataset!r}: expected <source>.<table>, e.g. population.citizens")
    return tasks.landing_target(find_source(settings.sources_dir, source_name), table)


# --- looking --------------------------------------------------------------------------------------------------

def overview(dataset: str | None = None, *, settings: Settings | None = None) -> list[dict]:
    """``quarantine.overview``: per dataset and check, rows, replay status and age."""
    settings = settings or get_settings()
    with database.connect(settings.warehouse_url) as conn:
        database.ensure_meta(conn)
        cur = conn.execute("select * from quarantine.overview where %(d)s::text is null or dataset = %(d)s"
                           " order by dataset, check_name", {"d": dataset})
        names = [c.name for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def show(dataset: str, *, check: str | None = None, ids: list[int] | None = None, limit: int = 20,
         settings: Settings | None = None) -> list[dict]:
    """Quarantined rows of ``dataset`` (oldest first) with their checks, reasons, payload, age and replay status.
    The payload is personal data."""
    settings = settings or get_settings()
    with database.connect(settings.warehouse_url) as conn:
        database.ensure_meta(conn)
        cur = conn.execute(
            "select quarantine_id as id, record_key, checks, reasons, payload, quarantined_at,"
            " date_trunc('second', now() - quarantined_at) as age, contract_version, replay_outcome,"
            " replayed_at, replay_run_id from quarantine.rows q where dataset = %(d)s"
            " and (%(c)s::text is null or %(c)s = any(checks))"
            " and (%(i)s::bigint[] is null or quarantine_id = any(%(i)s))"
            " order by quarantine_id limit %(n)s", {"d": dataset, "c": check, "i": ids or None, "n": limit})
        names = [c.name for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


# --- replay ---------------------------------------------------------------------------------------------------

@dataclass
class _Outcome:
    """The revalidated rows: what passes (contract columns + row hash, with quarantine ids in the same order)
    and the ids and checks of what still fails."""

    passed: list[pl.DataFrame] = field(default_factory=list)
    passed_ids: list[int] = field(default_factory=list)
    failing_ids: list[int] = field(default_factory=list)
    failing_checks: list[list[str]] = field(default_factory=list)

    def fail(self, quarantine_id: int, checks: list[str]) -> None:
        self.failing_ids.append(quarantine_id)
        self.failing_checks.append(sorted(checks))


def _candidates(conn: psycopg.Connection, target: LandingTarget, check: str | None,
                ids: list[int] | None) -> list[tuple]:
    """(id, checks, reasons, *contract columns typed as in landing) of every replayable row, oldest first."""
    cols = sql.SQL(", ").join(sql.SQL("r.{}").format(ident(c)) for c in target.columns)
    return conn.execute(sql.SQL(
        "select q.quarantine_id, q.checks, q.reasons, {cols} from quarantine.rows q"
        " cross join lateral jsonb_populate_record(null::{latest}, q.payload) r"
        " where q.dataset = %(d)s and " + _REPLAYABLE + " and not (%(dup)s = any(q.checks))"
        " and (%(c)s::text is null or %(c)s = any(q.checks))"
        " and (%(i)s::bigint[] is null or q.quarantine_id = any(%(i)s))"
        " order by q.quarantine_id"
    ).format(cols=cols, latest=ident(target.schema, target.table)),
        {"d": target.dataset, "dup": DUPLICATE_KEY, "c": check, "i": ids or None}).fetchall()


def _revalidate(rows: list[tuple], target: LandingTarget) -> _Outcome:
    """Validate the rebuilt rows with the current contract, exactly as the extract's gate does."""
    from ndc.contracts.validation import validate
    from ndc.landing.rowhash import row_hashes

    columns, schema = target.columns, target.contract.columns
    outcome = _Outcome()
    uncast = [r for r in rows if any(c.startswith(VALUE_TYPE) for c in r[1])]
    typed = [r for r in rows if not any(c.startswith(VALUE_TYPE) for c in r[1])]
    if typed:
        frame = pl.DataFrame([r[3:] for r in typed], schema=schema, orient="row")
        # Rows are matched back to their quarantine ids by their version hash (the gate may reorder rows; a
        # typed payload comes back unchanged, and identical payloads get identical outcomes).
        waiting: dict[str, list[int]] = {}
        for digest, row in zip(row_hashes(frame, columns), typed, strict=True):
            waiting.setdefault(digest, []).append(row[0])
        gated = validate(frame, target.contract)
        passed = gated.passed.with_columns(row_hashes(gated.passed, columns))
        outcome.passed.append(passed)
        for digest in passed["_ndc_row_hash"]:
            if not waiting.get(digest):
                raise NdcError(f"{target.dataset}: a revalidated row does not match its payload; nothing replayed")
            outcome.passed_ids.append(waiting[digest].pop(0))
        rejected = gated.rejected.with_columns(row_hashes(gated.rejected, columns))
        for digest, checks in zip(rejected["_ndc_row_hash"], rejected["_checks"], strict=True):
            outcome.fail(waiting[digest].pop(0), checks)
    for row in uncast:
        # The payload holds null where the value could not be cast; its raw text is in the reasons.
        raw = {reason["column"]: reason["value"] for label, reason in row[2].items() if label.startswith(VALUE_TYPE)}
        frame = pl.DataFrame([row[3:]], schema=schema, orient="row").with_columns(
            pl.Series(name, [value], dtype=pl.String) for name, value in raw.items())
        gated = validate(frame, target.contract)
        if gated.passed.height:
            outcome.passed.append(gated.passed.with_columns(row_hashes(gated.passed, columns)))
            outcome.passed_ids.append(row[0])
        else:
            outcome.fail(row[0], list(gated.rejected["_checks"][0]))
    return _drop_null_keys(outcome, target)


def _drop_null_keys(outcome: _Outcome, target: LandingTarget) -> _Outcome:
    """A row without its key cannot be merged (``stage_batch`` would quarantine it again): it still fails."""
    if not outcome.passed:
        return outcome
    frame = pl.concat(outcome.passed, how="vertical_relaxed").with_columns(
        pl.Series("_quarantine_id", outcome.passed_ids, dtype=pl.Int64))
    null_key = pl.any_horizontal(pl.col(c).is_null() for c in target.primary_key)
    for quarantine_id in frame.filter(null_key)["_quarantine_id"]:
        outcome.fail(quarantine_id, [PK_NOT_NULL])
    kept = frame.filter(~null_key)
    outcome.passed, outcome.passed_ids = [kept.drop("_quarantine_id")], kept["_quarantine_id"].to_list()
    return outcome


def _known_duplicates(conn: psycopg.Connection, target: LandingTarget, hashes: list[str]) -> set[str]:
    """Versions already judged the losing version of their key: the merge would drop them again."""
    found = conn.execute("select row_hash from quarantine.rows where dataset = %s and row_hash = any(%s)"
                         " and %s = any(checks)", (target.dataset, hashes, DUPLICATE_KEY)).fetchall()
    return {r[0] for r in found}


def _load(conn: psycopg.Connection, target: LandingTarget, passed: pl.DataFrame, run_id: str,
          began: datetime) -> int:
    """Stage the passing rows under the replay's own windows and merge them (inside the caller's transaction).

    Window k holds the k-th newest version of each key, so several replayed versions of one key are versions,
    not same-window duplicates. Returns the new versions appended to history."""
    from ndc.contracts.validation import GateResult

    order = [*target.primary_key, target.incremental_column, "_ndc_row_hash"]
    ranked = passed.sort(order, descending=[False] * len(target.primary_key) + [True, True]).with_columns(
        pl.int_range(pl.len()).over(list(target.primary_key)).alias("_rank"))
    for rank, group in ranked.group_by("_rank", maintain_order=False):
        rows = group.drop("_rank")
        window = (began, began + timedelta(microseconds=int(rank[0])))
        stage_batch(conn, target, GateResult(passed=rows, rejected=rows.clear(), repaired=0), run_id=run_id,
                    window=window, batch_no=int(rank[0]) + 1, started_at=datetime.now(UTC))
    return merge_staged(conn, target, run_id).rows_new_versions


def _mark(conn: psycopg.Connection, ids: list[int], run_id: str, outcome: str) -> None:
    if ids:
        conn.execute("update quarantine.rows set replayed_at = clock_timestamp(), replay_run_id = %s,"
                     " replay_outcome = %s where quarantine_id = any(%s)", (run_id, outcome, ids))


def replay(dataset: str, *, check: str | None = None, ids: list[int] | None = None, run_id: str | None = None,
           dry_run: bool = False, settings: Settings | None = None) -> ReplayResult:
    """Revalidate ``dataset``'s replayable quarantined rows (optionally only those failing ``check`` or with the
    given ids) with its current contract and load those that now pass. See the module's docstring."""
    settings = settings or get_settings()
    target = target_of(dataset, settings)
    run = Handoff(kind="replay", source="quarantine.rows", target=f"{target.schema}.{target.table}",
                  run_id=run_id or new_run_id("replay"), contract=target.contract, gate="replay", dataset=dataset,
                  closes_alerts=False, write=not dry_run)
    result = ReplayResult(dataset=dataset, run_id=run.run_id, contract_name=target.contract.name,
                          contract_version=target.contract.version, dry_run=dry_run)
    started_at = datetime.now(UTC)
    with database.connect(settings.warehouse_url) as conn:
        database.ensure_meta(conn)
        latest = ident(target.schema, target.table).as_string(conn)
        if conn.execute("select to_regclass(%s)", (latest,)).fetchone()[0] is None:
            raise NdcError(f"{dataset}: landing table {target.schema}.{target.table} does not exist (never "
                           f"extracted?); run `ndc extract {dataset.replace('.', ' ', 1)} ...` first. Nothing replayed")
        if not dry_run:
            lock_dataset(conn, target)  # no extract of this table merges meanwhile
            prepare_session(conn, target)
        with conn.transaction():
            rows = _candidates(conn, target, check, ids)
            result.rows_skipped_duplicate_key = conn.execute(
                "select count(*) from quarantine.rows q where dataset = %s and %s = any(checks) and " + _REPLAYABLE,
                (dataset, DUPLICATE_KEY)).fetchone()[0]
        if not rows:
            log.info("%s: nothing to replay", dataset)
            return result
        result.rows_in, result.first_id, result.last_id = len(rows), rows[0][0], rows[-1][0]
        result.checks_before = dict(Counter(c for r in rows for c in r[1]))
        # A failed replay's figures: everything it revalidated stays in quarantine.
        run.rows_in = run.rows_checked = run.rows_quarantined = result.rows_in
        run.rows_failed = 0
        run.details = {"quarantine_ids": [result.first_id, result.last_id], "checks_before": result.checks_before,
                       "rows_skipped_duplicate_key": result.rows_skipped_duplicate_key}
        with recorded(conn, run):
            try:
                outcome = _replay(conn, target, rows, result, run.run_id, started_at, dry_run)
            except NdcError as exc:
                run.blocked = ledger_error(exc)  # kept with the contract result: no row values
                raise
            run.rows_failed = len(outcome.failing_checks)
            run.failed_by_check.update(c for checks in outcome.failing_checks for c in checks)
            run.rows_loaded, run.rows_quarantined = result.rows_loaded, result.rows_still_failing
            run.details.update(checks_now=result.checks_now, rows_new_versions=result.rows_new_versions)
    log.info("%s replay: %s", dataset, result)
    return result


def _replay(conn: psycopg.Connection, target: LandingTarget, rows: list[tuple], result: ReplayResult,
            run_id: str, started_at: datetime, dry_run: bool) -> _Outcome:
    outcome = _revalidate(rows, target)
    passed = outcome.passed[0] if outcome.passed else pl.DataFrame()
    with conn.transaction():  # the load and the marks together, or neither
        if passed.height:
            losers = _known_duplicates(conn, target, passed["_ndc_row_hash"].to_list())
            lost = passed["_ndc_row_hash"].is_in(list(losers)).to_list()
            for quarantine_id, gone in zip(outcome.passed_ids, lost, strict=True):
                if gone:
                    outcome.fail(quarantine_id, [DUPLICATE_KEY])
            outcome.passed_ids = [i for i, gone in zip(outcome.passed_ids, lost, strict=True) if not gone]
            passed = passed.filter(~pl.Series(lost, dtype=pl.Boolean))
        result.rows_loaded, result.rows_still_failing = len(outcome.passed_ids), len(outcome.failing_ids)
        result.checks_now = dict(Counter(c for checks in outcome.failing_checks for c in checks))
        if dry_run:
            return outcome
        if passed.height:
            result.rows_new_versions = _load(conn, target, passed, run_id, started_at)
        _mark(conn, outcome.passed_ids, run_id, LOADED)
        _mark(conn, outcome.failing_ids, run_id, STILL_FAILING)
    return outcome
