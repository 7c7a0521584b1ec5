"""Ground truth for any source: what landed and what was quarantined, compared with the simulator's manifest.

The expectations come from the simulator (its manifest and its tables), never from the pipeline's own counts.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import polars as pl

from ndc.config.sources import SourceConfig
from tests.helpers.database import query


def record_keys(frame: pl.DataFrame, key: list[str]) -> set[str]:
    """Primary keys as the quarantine records them: text values joined with '|' (nulls skipped)."""
    texts = frame.select(pl.concat_str([pl.col(c).cast(pl.String) for c in key], separator="|",
                                       ignore_nulls=True).fill_null("")).to_series()
    return set(texts.to_list())


@dataclass
class Outcome:
    landed: set[str]
    quarantined: dict[str, set[str]]  # check -> keys
    repaired: int


def assert_rows_equal(found: pl.DataFrame, wanted: pl.DataFrame, key: list[str], what: str) -> None:
    """``found`` holds exactly the keys of ``wanted`` and, per key, the same value in every column of ``wanted``;
    the message names a few of the differences."""
    problems = []
    missing, extra = wanted.join(found, on=key, how="anti"), found.join(wanted, on=key, how="anti")
    if missing.height:
        problems.append(f"{missing.height} rows missing, e.g. {missing.head(3).rows()}")
    if extra.height:
        problems.append(f"{extra.height} rows not expected, e.g. {extra.head(3).rows()}")
    joined = wanted.join(found.select(wanted.columns), on=key, suffix="_found")
    for column in (c for c in wanted.columns if c not in key):
        differ = joined.filter(pl.col(column).ne_missing(pl.col(f"{column}_found")))
        if differ.height:
            sample = differ.select(*key, column, f"{column}_found").head(3).rows()
            problems.append(f"{column}: {differ.height} rows differ (key, expected, found), e.g. {sample}")
    assert not problems, f"{what}:\n  " + "\n  ".join(problems)


def outcome(warehouse: str, source: SourceConfig, table: str) -> Outcome:
    cfg = source.table(table)
    keys = ", ".join(f"{c}::text" for c in cfg.primary_key)
    landed = {r[0] for r in query(warehouse, f"select concat_ws('|', {keys}) from "
                                  f"{source.landing_schema}.{table}")}
    quarantined: dict[str, set[str]] = defaultdict(set)
    for checks, key in query(warehouse, "select checks, record_key from quarantine.rows where dataset = %s",
                             (f"{source.name}.{table}",)):
        for check in checks:
            quarantined[check].add(key)
    repaired = query(warehouse, "select coalesce(sum(rows_repaired), 0) from ndc_meta.batches where dataset = %s",
                     (f"{source.name}.{table}",))[0][0]
    return Outcome(landed, dict(quarantined), int(repaired))


def assert_matches_manifest(warehouse: str, source: SourceConfig, tables: dict[str, pl.DataFrame],
                            manifest: pl.DataFrame) -> dict[str, dict[str, int]]:
    """Every injected defect has its expected outcome and no clean row is quarantined; returns counts."""
    summary = {}
    for table, frame in tables.items():
        cfg = source.table(table)
        got = outcome(warehouse, source, table)
        rows = manifest.filter(pl.col("table_name") == table)
        by_outcome = {o: set(rows.filter(pl.col("expected_outcome") == o)["record_key"].to_list())
                      for o in ("quarantined", "superseded", "repaired", "exception")}
        for check, keys in rows.filter(pl.col("expected_outcome") == "quarantined").group_by(
                "expected_check").agg("record_key").iter_rows():
            missing = set(keys) - got.quarantined.get(check, set())
            assert not missing, f"{table}: {len(missing)} rows expected under {check} are not: {sorted(missing)[:5]}"
        all_quarantined = set().union(*got.quarantined.values()) if got.quarantined else set()
        unexpected = all_quarantined - by_outcome["quarantined"] - by_outcome["superseded"]
        assert not unexpected, f"{table}: clean rows quarantined: {sorted(unexpected)[:5]}"
        assert by_outcome["superseded"] <= got.quarantined.get("duplicate_key", set()), table
        source_keys = record_keys(frame, cfg.primary_key)
        expected_landed = source_keys - by_outcome["quarantined"]
        assert got.landed == expected_landed, (
            f"{table}: landed - expected {sorted(got.landed - expected_landed)[:5]}, "
            f"expected - landed {sorted(expected_landed - got.landed)[:5]}")
        assert by_outcome["superseded"] <= got.landed and by_outcome["exception"] <= got.landed, table
        assert got.repaired == len(rows.filter(pl.col("expected_outcome") == "repaired")), (
            f"{table}: {got.repaired} rows repaired, manifest lists "
            f"{len(rows.filter(pl.col('expected_outcome') == 'repaired'))}")
        summary[table] = {"source_rows": frame.height, "landed": len(got.landed),
                          "quarantined": len(all_quarantined), "repaired": got.repaired}
    return summary
