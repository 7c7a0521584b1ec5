"""Source freshness, the gate before the conform build: how long since each landing table last loaded, against
the thresholds its dbt source declares (``loaded_at_field`` and ``freshness`` in ``_<source>__sources.yml``, read
from the manifest). One ``max()`` per table instead of ``dbt source freshness`` (which spends seconds starting up).

- ``pass``: within ``warn_after``; ``warn``: past ``warn_after``, reported and built on;
- ``error``: past ``error_after``: the gate stops the build (nothing is built on it, nothing is published and
  consumers keep the last good build, which already holds what the source last sent) unless the operator
  accepts the staleness for this run (``ndc conform --accept-stale``, the conform DAG's ``accept_stale`` param);
- ``never_loaded``: the landing table is empty (a source registered but not connected yet): reported, not an
  error, so one new source does not hold back the others;
- ``missing``: the landing table does not exist (it was loaded once: ``ndc.tasks.prepare_conform`` re-creates
  only never-loaded ones): the gate stops the build like ``error``, and no acceptance overrides it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

from ndc.errors import NdcError
from ndc.identifiers import ident

log = logging.getLogger(__name__)

PERIODS = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}


class StaleSourceError(NdcError):
    """A source is past its freshness error threshold: the conform build does not start."""


@dataclass(frozen=True)
class Freshness:
    source: str
    table: str
    status: str                      # pass | warn | error | never_loaded | missing
    last_loaded_at: datetime | None
    age: timedelta | None
    warn_after: timedelta | None
    error_after: timedelta | None

    def describe(self) -> str:
        if self.status in ("never_loaded", "missing"):
            return f"{self.source}.{self.table}: {self.status.replace('_', ' ')}"
        limit = self.error_after if self.status == "error" else self.warn_after
        return (f"{self.source}.{self.table}: {self.status}, last loaded {self.last_loaded_at:%Y-%m-%d %H:%M} UTC"
                f" ({_human(self.age)} ago; threshold {_human(limit)})")


def _human(delta: timedelta | None) -> str:
    if delta is None:
        return "none"
    hours = delta.total_seconds() / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} h"


def threshold(rule: dict | None) -> timedelta | None:
    if not rule or rule.get("count") is None or rule.get("period") is None:
        return None
    return rule["count"] * PERIODS[rule["period"]]


def declared_sources(manifest_path: Path) -> list[dict]:
    if not manifest_path.exists():
        raise NdcError(f"{manifest_path} is missing: run `ndc dbt parse` first")
    sources = json.loads(manifest_path.read_text())["sources"].values()
    return [s for s in sources if (s.get("loaded_at_field") or s["config"].get("loaded_at_field"))
            and (s.get("freshness") or s["config"].get("freshness"))]


def check(conn: psycopg.Connection, manifest_path: Path, now: datetime | None = None) -> list[Freshness]:
    """Freshness of every dbt source that declares a ``loaded_at_field`` and thresholds."""
    now = now or datetime.now(UTC)
    found = []
    for source in sorted(declared_sources(manifest_path), key=lambda s: (s["source_name"], s["name"])):
        rules = source.get("freshness") or source["config"]["freshness"]
        field = source.get("loaded_at_field") or source["config"]["loaded_at_field"]
        relation = ident(source["schema"], source["identifier"])
        with conn.transaction():
            exists = conn.execute("select to_regclass(%s) is not null",
                                  (relation.as_string(conn),)).fetchone()[0]
            last = conn.execute(sql.SQL("select max({}) from {}").format(ident(field), relation)
                                ).fetchone()[0] if exists else None
        warn, error = threshold(rules.get("warn_after")), threshold(rules.get("error_after"))
        age = now - last if last else None
        status = ("missing" if not exists else "never_loaded" if last is None else "error" if error and age > error
                  else "warn" if warn and age > warn else "pass")
        found.append(Freshness(source["source_name"], source["name"], status, last, age, warn, error))
    return found


def gate(results: list[Freshness], *, accept_stale: bool = False) -> list[Freshness]:
    """Report every source that is not fresh; stop on an ``error`` unless the operator accepted it."""
    for result in results:
        if result.status != "pass":
            log.warning("source freshness: %s", result.describe())
    missing = [r for r in results if r.status == "missing"]
    if missing:
        raise StaleSourceError(
            "landing tables missing, conform not started (nothing published, consumers still read the previous"
            " build): " + "; ".join(r.describe() for r in missing) + ". Reload them with a full refresh.")
    stale = [r for r in results if r.status == "error"]
    if stale and not accept_stale:
        raise StaleSourceError(
            "stale sources, conform not started (nothing published, consumers still read the previous build): "
            + "; ".join(r.describe() for r in stale)
            + ". Reload them, or accept the staleness for one run (`ndc conform --accept-stale`, or the conform"
              " DAG's accept_stale param).")
    return results
