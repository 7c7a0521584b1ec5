"""The source-freshness gate before the conform build, on a real PostgreSQL: thresholds come from the dbt sources
(manifest); a source never loaded gets empty landing tables and is reported, a stale one stops the build by name."""

from __future__ import annotations

import psycopg
import pytest

from ndc.conform.freshness import StaleSourceError
from ndc.tasks import prepare_conform
from tests.helpers.database import scalar

SOURCES = {"population", "taxation", "insurance", "enterprise", "education"}


def _loaded(url: str, days_ago: float) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("delete from landing_population.households")
        conn.execute("insert into landing_population.households (household_id, updated_at, _ndc_row_hash,"
                     " _ndc_batch_id, _ndc_run_id, _ndc_loaded_at) values ('HK0000000001', now(), 'h',"
                     " gen_random_uuid(), 'test', now() - make_interval(secs => %s))", (days_ago * 86400,))


def test_never_loaded_sources_get_empty_landing_tables_and_are_reported(dbs):
    prepared = prepare_conform()
    assert prepared["build_schema"] == "shared_a"
    assert {k.split(".")[0] for k in prepared["freshness"]} == SOURCES
    assert len(prepared["freshness"]) == 16 and set(prepared["freshness"].values()) == {"never_loaded"}
    for dataset in prepared["freshness"]:
        source, table = dataset.split(".")
        assert scalar(dbs.warehouse, "select to_regclass(%s) is not null", (f"landing_{source}.{table}",))


def test_a_stale_source_stops_the_build_naming_it(dbs):
    prepare_conform()
    _loaded(dbs.warehouse, days_ago=3)  # past warn_after (2 days): reported, built on
    assert prepare_conform()["freshness"]["population.households"] == "warn"
    _loaded(dbs.warehouse, days_ago=8)  # past error_after (7 days)
    with pytest.raises(StaleSourceError, match=r"population\.households: error, last loaded .* threshold 7\.0 days"):
        prepare_conform()
    assert prepare_conform(accept_stale=True)["freshness"]["population.households"] == "error"


def test_a_loaded_table_that_went_missing_is_not_recreated_and_stops_the_build(dbs):
    prepare_conform(accept_stale=True)  # the landing tables exist (the previous test left one stale)
    with psycopg.connect(dbs.warehouse, autocommit=True) as conn:
        conn.execute("delete from landing_population.households")
        conn.execute("insert into ndc_meta.watermarks (dataset, loaded_through, last_run_id)"
                     " values ('taxation.filings', now(), 'test') on conflict do nothing")
        conn.execute("drop table landing_taxation.filings")
    with pytest.raises(StaleSourceError, match=r"landing tables missing.*taxation\.filings: missing"):
        prepare_conform(accept_stale=True)
    assert scalar(dbs.warehouse, "select to_regclass('landing_taxation.filings')") is None
