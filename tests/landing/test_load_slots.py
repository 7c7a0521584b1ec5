"""The warehouse's cap on concurrent loads (``NDC_WAREHOUSE_MAX_LOADS``, issue 19): with thousands of sources, Airflow's
pools cap connections per source; this caps the warehouse. A load waits for a slot (saying so in its log) and a slot
is freed when its session ends, also when the load's process dies."""

from __future__ import annotations

import logging
import threading
import time

import psycopg
import pytest

from ndc.landing.load import LOAD_SLOTS, take_load_slot


def _waiting_load(url: str, max_loads: int, found: dict) -> threading.Thread:
    def run() -> None:
        conn = psycopg.connect(url)
        found["conn"] = conn
        found["slot"] = take_load_slot(conn, max_loads, "population.citizens", poll_seconds=0.05, say_every=0.2)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_load_waits_for_a_free_slot_and_takes_it_when_one_is_freed(dbs, caplog):
    first = psycopg.connect(dbs.warehouse)
    second = psycopg.connect(dbs.warehouse)
    assert take_load_slot(first, 2, "taxation.filings") == 0
    assert take_load_slot(second, 2, "taxation.payments") == 1
    found: dict = {}
    with caplog.at_level(logging.INFO, logger="ndc.landing.load"):
        waiting = _waiting_load(dbs.warehouse, 2, found)
        time.sleep(1.0)
        assert waiting.is_alive() and "slot" not in found, "both slots are taken: the third load waits"
        assert "waiting for a warehouse load slot (all 2 taken" in caplog.text
        first.close()  # the first load's session ends (its process may have died): its slot is free
        waiting.join(timeout=10)
    assert not waiting.is_alive() and found["slot"] == 0
    held = psycopg.connect(dbs.warehouse, autocommit=True)
    holders = held.execute("select count(*) from pg_locks where locktype = 'advisory' and classid = %s and granted",
                           (LOAD_SLOTS,)).fetchone()[0]
    assert holders == 2
    for conn in (second, found["conn"], held):
        conn.close()


@pytest.mark.parametrize("max_loads", [1, 3])
def test_no_more_loads_than_slots_hold_one_at_a_time(dbs, max_loads):
    conns = [psycopg.connect(dbs.warehouse) for _ in range(max_loads)]
    assert sorted(take_load_slot(c, max_loads, f"d{i}") for i, c in enumerate(conns)) == list(range(max_loads))
    extra: dict = {}
    waiting = _waiting_load(dbs.warehouse, max_loads, extra)
    time.sleep(0.5)
    assert waiting.is_alive()
    conns[-1].close()
    waiting.join(timeout=10)
    assert extra["slot"] == max_loads - 1
    for conn in [*conns[:-1], extra["conn"]]:
        conn.close()
