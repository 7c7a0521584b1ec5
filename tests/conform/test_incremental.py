"""Conform at the cost of the change (issue 18), on a real PostgreSQL with the five simulated sources.

After every step of random source changes — new citizens (namesakes included, so identity matches change),
updates, a household and taxpayers relinked, deletes found by a full compare and by tombstones, rows committed late
and loaded by re-extracting an old interval, residences recorded either side of 2025-07-01, rows replayed from
quarantine — the delta run is published and every shared view equals a full refresh of the same landing data,
both ways (``ndc.conform.verify``: ``EXCEPT ALL`` each way and the row counts). A delta blocked by gate 2 leaves
consumers on the previous version, and the next run publishes what was held back.
"""

from __future__ import annotations

import dataclasses
import os
import random
from datetime import UTC, datetime

import psycopg
import pytest
from ndc_lab.simulate.all_sources import EVERYTHING, five_sources
from ndc_lab.simulate.common import SourceSpec

from ndc import tasks
from ndc.audit.quarantine import replay
from ndc.config.sources import find_source
from ndc.conform import dbt
from ndc.conform.publish import active_schema
from ndc.conform.run_plan import NothingToConform, RunPlan
from ndc.conform.verify import verify
from ndc.contracts import Contract
from ndc.errors import ConfigError, PublishBlockedError
from ndc.landing.full_compare import compare_table
from ndc.settings import get_settings
from ndc.tasks import conform, conform_sources, extract_table, prepare_conform, publish_build
from ndc.warehouse import database
from tests.audit.test_quarantine import FIXED, CitizensFixed
from tests.helpers.database import query, scalar

SPEC = SourceSpec(citizens=4_000, seed=1818, defect_rate=0.003)
SEED = int(os.environ.get("NDC_TEST_SEED", "18"))
STEPS = 4
QUARANTINED = "select record_key, checks, reasons from quarantine.rows where record_key = any(%s)"


@pytest.fixture(scope="module")
def world(request, dbs, tmp_path_factory):
    with five_sources(dbs.warehouse, SPEC, run=dbs.run, drops=tmp_path_factory.mktemp("drops")) as loaded:
        dbt.parse()
        first = conform(run_id="incremental-first")
        assert first["mode"] == "full" and first["reason"] == "nothing is published yet"
        yield loaded


def _now() -> datetime:
    return datetime.now(UTC)


class Changes:
    """Random changes written to the source databases, as an agency's system would."""

    def __init__(self, urls: dict[str, str], warehouse: str, rng: random.Random) -> None:
        self.urls, self.warehouse, self.rng, self.made = urls, warehouse, rng, 0
        self.added: set[str] = set()    # citizens written by the steps (each must reach shared.citizens)
        self.deleted: set[str] = set()

    def pin(self, province: str, born, sex: str) -> str:
        """A well-formed PIN (province of registration, century and sex, year of birth) no citizen has."""
        self.made += 1
        century = (born.year // 100 - 19) * 2 + (sex == "F")
        pin = f"0{province}{century}{born.year % 100:02d}{900000 + self.made:06d}"
        self.added.add(pin)
        return pin

    def _pg(self, source: str):
        return psycopg.connect(self.urls[source], autocommit=True)

    def _pins(self, conn, n: int) -> list[str]:
        pins = [r[0] for r in conn.execute("select distinct pin from citizens where pin is not null"
                                           " and pin ~ '^[0-9]{12}$' order by 1")]
        return self.rng.sample(pins, n)

    def _sample(self, conn, sql: str, n: int, params=()) -> list[tuple]:
        """n rows of an ordered query, chosen by the seeded generator (never the database's random()), so a
        seed replays the same changes."""
        return self.rng.sample(conn.execute(sql, params).fetchall(), n)

    def _published_pins(self) -> list[str]:
        """Citizens that passed both gates: a new citizen modelled on one of them passes gate 1 too (a model
        with a defect the simulator planted would be quarantined with its copy)."""
        with psycopg.connect(self.warehouse) as conn:
            return [r[0] for r in conn.execute("select citizen_id from shared.citizens order by 1")]

    def new_citizens(self) -> set[str]:
        """New citizens, half of them namesakes (same name and birth date) of existing ones."""
        with self._pg("population") as conn:
            models = self._sample(conn, "select full_name, birth_date, sex, household_id, province_code from"
                                  " citizens where pin = any(%s) order by pin", 6, (self._published_pins(),))
            for i, (name, born, sex, household, _province) in enumerate(models):
                pin = self.pin("01", born, sex)
                name = name if i % 2 == 0 else f"Người Mới {self.made}"
                conn.execute("insert into citizens (pin, cmnd, full_name, birth_date, sex, ethnicity, household_id,"
                             " province_code, ward, address, updated_at) values (%s, null, %s, %s, %s, 'Kinh', %s,"
                             " '01', 'Phường 1', 'Số 1', %s)", (pin, name, born, sex, household, _now()))
        return {"population"}

    def update_citizens(self) -> set[str]:
        """Names, wards, households and deaths changed."""
        with self._pg("population") as conn:
            pins = self._pins(conn, 8)
            households = [r[0] for r in self._sample(conn, "select household_id from households order by 1", 3)]
            # a version recorded now carries a province code valid now (Hà Nội, 01)
            moved = "province_code = '01', updated_at = %s"
            conn.execute(f"update citizens set full_name = full_name || ' Văn', {moved} where pin = %s",
                         (_now(), pins[0]))
            conn.execute(f"update citizens set ward = 'Phường Mới', {moved} where pin = any(%s)", (_now(), pins[1:4]))
            conn.execute(f"update citizens set household_id = %s, {moved} where pin = %s",
                         (households[0], _now(), pins[4]))
            conn.execute(f"update citizens set death_date = greatest(birth_date, date '2025-03-01'), {moved}"
                         " where pin = %s", (_now(), pins[5]))
            conn.execute(f"update households set ward = 'Phường Đổi', {moved} where household_id = any(%s)",
                         (_now(), households[1:]))
        return {"population"}

    def delete_citizens(self) -> set[str]:
        """Citizens deleted outright at the source: only a full compare finds them."""
        with self._pg("population") as conn:
            pins = self._pins(conn, 3)
            conn.execute("delete from citizens where pin = any(%s)", (pins,))
            self.deleted |= set(pins)
        return {"population", "compare:population.citizens"}

    def relink_taxpayers(self) -> set[str]:
        """Taxpayers' recorded PIN moved to another citizen or removed (then matched by name), and new filings."""
        with self._pg("population") as population:
            pins = self._pins(population, 3)
        with self._pg("taxation") as conn:
            payers = [r[0] for r in self._sample(conn, "select taxpayer_id from taxpayers where taxpayer_kind ="
                                                 " 'individual' and pin is not null order by 1", 3)]
            conn.execute("update taxpayers set pin = %s, province_code = '01', updated_at = %s where taxpayer_id = %s",
                         (pins[0], _now(), payers[0]))
            conn.execute("update taxpayers set pin = null, province_code = '01', updated_at = %s"
                         " where taxpayer_id = %s", (_now(), payers[1]))
            top = conn.execute("select coalesce(max(filing_id), 0) from filings").fetchone()[0]
            conn.execute("insert into filings (filing_id, taxpayer_id, tax_period, form_code, filed_on,"
                         " declared_amount, updated_at) select %s, %s, tax_period, form_code, filed_on,"
                         " declared_amount, %s from filings order by filing_id limit 1", (top + 1, payers[2], _now()))
            gone = self._sample(conn, "select filing_id from filings order by 1", 1)[0][0]
            conn.execute("delete from filings where filing_id = %s", (gone,))
        return {"taxation", "compare:taxation.filings"}

    def tombstone_contributions(self) -> set[str]:
        """Contributions withdrawn at the insurance fund: tombstones (deleted_at)."""
        with self._pg("insurance") as conn:
            withdrawn = [r[0] for r in self._sample(conn, "select contribution_id from contributions"
                                                    " where deleted_at is null order by 1", 4)]
            conn.execute("update contributions set deleted_at = %s, updated_at = %s where contribution_id = any(%s)",
                         (_now(), _now(), withdrawn))
        return {"insurance"}

    def late_and_boundary_rows(self) -> set[str]:
        """Citizens recorded just before and just after 2025-07-01 in Việt Nam (Kon Tum, 62, then Quảng Ngãi),
        committed only now, long after their interval was extracted: a re-extract of that interval loads them."""
        born = datetime(1990, 1, 1).date()
        with self._pg("population") as conn:
            for province, stamp in (("62", "2025-06-30 16:59:59+00"), ("51", "2025-06-30 17:00:00+00")):
                conn.execute("insert into citizens (pin, full_name, birth_date, sex, ethnicity, province_code, ward,"
                             " address, updated_at) values (%s, %s, %s, 'F', 'Kinh', %s, 'Phường 2', 'Số 2', %s)",
                             (self.pin("62", born, "F"), f"Trễ Hạn {self.made}", born, province, stamp))
        return {"late:population"}

    def quarantined_then_replayed(self) -> set[str]:
        """A citizen whose CMND has 12 digits is quarantined by version 1 of the contract; the fixed minor
        version accepts it, and the replay loads it."""
        born = datetime(1985, 5, 5).date()
        with self._pg("population") as conn:
            pin = self.pin("01", born, "M")
            conn.execute("insert into citizens (pin, cmnd, full_name, birth_date, sex, ethnicity, province_code,"
                         " ward, address, updated_at) values (%s, %s, %s, %s, 'M', 'Kinh', '01', 'Phường 3', 'Số 3',"
                         " %s)", (pin, pin, f"Phát Lại {self.made}", born, _now()))
        return {"population", "replay:population.citizens"}


KINDS = ["new_citizens", "update_citizens", "delete_citizens", "relink_taxpayers", "tombstone_contributions",
         "late_and_boundary_rows", "quarantined_then_replayed"]


def load(done: set[str], monkeypatch) -> list[str]:
    """Extract what changed, as the extract DAGs would; returns the sources that loaded."""
    sources = sorted({d for d in done if ":" not in d} | {d.split(":")[1] for d in done if d.startswith("late:")})
    for name in sources:
        source = find_source(get_settings().sources_dir, name)
        for table in source.tables:
            extract_table(source, table.name, *EVERYTHING, run_id=f"step-{name}-{table.name}")
    for mark in sorted(d for d in done if d.startswith("late:")):  # the old interval extracted again
        source = find_source(get_settings().sources_dir, mark.split(":")[1])
        for table in source.tables:
            extract_table(source, table.name, datetime(2025, 6, 1, tzinfo=UTC), datetime(2025, 8, 1, tzinfo=UTC),
                          run_id=f"late-{table.name}")
    for mark in sorted(d for d in done if d.startswith("compare:")):
        source, table = mark.split(":")[1].split(".")
        compare_table(source, table, run_id=f"compare-{table}", allow_mass_delete=True)
    for mark in sorted(d for d in done if d.startswith("replay:")):
        dataset = mark.split(":")[1]
        original = tasks.landing_target

        def with_fix(source, table_name, original=original, dataset=dataset):
            target = original(source, table_name)
            if target.dataset != dataset:
                return target
            return dataclasses.replace(target, contract=Contract(dataset, FIXED, CitizensFixed))

        with monkeypatch.context() as patched:
            patched.setattr(tasks, "landing_target", with_fix)
            assert replay(dataset, run_id="step-replay").rows_loaded >= 1
    return sorted({m.split(":")[1].split(".")[0] for m in done if ":" in m} | set(sources))


def assert_equal_to_a_full_refresh(url: str) -> None:
    with database.connect(url) as conn:
        compared = verify(conn)
    differing = {m: (c.published_rows, c.full_rows, c.only_published, c.only_full, c.sample_only_published[:2],
                     c.sample_only_full[:2]) for m, c in compared.items() if not c.equal}
    assert not differing, f"published delta differs from a full refresh (seed {SEED}): {differing}"


def test_random_changes_published_as_deltas_equal_a_full_refresh(dbs, world, monkeypatch):
    rng = random.Random(SEED)
    changes = Changes(world.urls, dbs.warehouse, rng)
    for step in range(1, STEPS + 1):
        kinds = rng.sample(KINDS, 3) if step > 1 else KINDS  # the first step makes every kind of change
        done: set[str] = set()
        for kind in kinds:
            done |= getattr(changes, kind)()
        sources = load(done, monkeypatch)
        published = conform(run_id=f"incremental-step-{step}", sources=sources)
        assert published["mode"] == "delta", published["reason"]
        expected = changes.added - changes.deleted  # the changes pass gate 1: they are not a no-op
        published_now = {r[0] for r in query(dbs.warehouse, "select citizen_id from shared.citizens"
                                             " where citizen_id = any(%s)", (sorted(expected),))}
        missing = sorted(expected - published_now)
        assert not missing, (f"step {step} (seed {SEED}): citizens not published: {missing}; quarantined as: "
                             f"{query(dbs.warehouse, QUARANTINED, (missing,))}")
        assert scalar(dbs.warehouse, "select count(*) from shared.citizens where citizen_id = any(%s)",
                      (sorted(changes.deleted),)) == 0
        assert_equal_to_a_full_refresh(dbs.warehouse)
    replaced = query(dbs.warehouse, "select details->'replaced' from ndc_meta.ledger where kind = 'publish'"
                     " and run_id = 'incremental-step-1' and outcome = 'success'")[0][0]
    total = scalar(dbs.warehouse, "select count(*) from shared.citizens")
    assert 0 < replaced["citizens"]["inserted"] < total / 10, "a delta replaces the changed citizens, not all"


def test_a_delta_blocked_by_gate_2_keeps_the_previous_version_and_the_next_run_publishes_it(dbs, world):
    with psycopg.connect(world.urls["population"], autocommit=True) as conn:
        conn.execute("update citizens set full_name = 'Giữ Lại', province_code = '01', updated_at = %s"
                     " where pin = (select min(pin) from citizens where pin ~ '^[0-9]{12}$')", (_now(),))
        held = conn.execute("select min(pin) from citizens where pin ~ '^[0-9]{12}$'").fetchone()[0]
    source = find_source(get_settings().sources_dir, "population")
    extract_table(source, "citizens", *EVERYTHING, run_id="held-back")
    publications = scalar(dbs.warehouse, "select count(*) from ndc_meta.publications")
    active = active_schema_of(dbs.warehouse)
    prepared = prepare_conform(run_id="faulty-delta", sources=["population"])
    plan = RunPlan.from_dict(prepared["plan"])
    assert plan.is_delta
    result = dbt.run(["build", *plan.dbt_args()], dbt_vars=plan.dbt_vars())
    assert result.returncode == 0, result.output[-3000:]
    with psycopg.connect(dbs.warehouse, autocommit=True) as conn:  # a faulty transformation in the delta
        conn.execute("update shared_delta.citizens set sex = 'X' where citizen_id = %s", (held,))
    with pytest.raises(PublishBlockedError, match="sex"):
        publish_build(prepared["plan"], run_id="faulty-delta", as_of=prepared["started_at"])
    assert scalar(dbs.warehouse, "select count(*) from ndc_meta.publications") == publications
    assert active_schema_of(dbs.warehouse) == active
    assert scalar(dbs.warehouse, "select full_name from shared.citizens where citizen_id = %s",
                  (held,)) != "Giữ Lại", "consumers keep the previous version"
    assert scalar(dbs.warehouse, "select count(*) from shared.citizens where sex = 'X'") == 0
    # The next run (nothing new loaded) publishes what was held back.
    published = conform(run_id="after-faulty-delta", sources=["population"])
    assert published["mode"] == "delta"
    assert scalar(dbs.warehouse, "select full_name from shared.citizens where citizen_id = %s",
                  (held,)) == "Giữ Lại"
    assert_equal_to_a_full_refresh(dbs.warehouse)


def test_a_full_refresh_is_asked_for_and_publishes_by_a_view_switch(dbs, world):
    before = active_schema_of(dbs.warehouse)
    published = conform(run_id="asked-full", full_refresh=True)
    assert (published["mode"], published["reason"]) == ("full", "a full refresh was asked for")
    assert active_schema_of(dbs.warehouse) != before
    assert scalar(dbs.warehouse, "select count(*) from information_schema.tables where table_schema = %s",
                  (before,)) == 0, "the copy consumers no longer read is dropped"
    nothing = conform(run_id="nothing-changed")
    assert nothing["mode"] == "delta"
    replaced = query(dbs.warehouse, "select details->'replaced' from ndc_meta.ledger where kind = 'publish'"
                     " and run_id = 'nothing-changed'")[0][0]
    assert all(r == {"deleted": 0, "inserted": 0} for r in replaced.values()), replaced


def active_schema_of(url: str) -> str | None:
    with database.connect(url) as conn:
        return active_schema(conn)


def test_a_scheduled_run_builds_what_loaded_since_the_last_publication(dbs, world):
    """Runs are grouped by time window (issue 19): a scheduled run asks the ledger which sources brought changes
    since the last publication's horizon, builds only what they feed, and is skipped when none did."""
    conform(run_id="scheduled-baseline")  # everything pending is published
    assert conform_sources(None, scheduled=True)[0] == []
    runs = scalar(dbs.warehouse, "select count(*) from ndc_meta.conform_runs")
    with pytest.raises(NothingToConform, match="nothing to build or publish"):
        prepare_conform(run_id="scheduled-nothing", sources=[])
    assert scalar(dbs.warehouse, "select count(*) from ndc_meta.conform_runs") == runs, "a skipped run is no run"
    # a daily extract that finds nothing new is no change
    taxation = find_source(get_settings().sources_dir, "taxation")
    extract_table(taxation, "taxpayers", *EVERYTHING, run_id="scheduled-no-change")
    assert conform_sources(None, scheduled=True)[0] == []
    with psycopg.connect(world.urls["taxation"], autocommit=True) as conn:
        payer = conn.execute("select min(taxpayer_id) from taxpayers where taxpayer_kind = 'individual'").fetchone()[0]
        conn.execute("update taxpayers set province_code = '01', updated_at = %s where taxpayer_id = %s",
                     (_now(), payer))
    extract_table(taxation, "taxpayers", *EVERYTHING, run_id="scheduled-taxation-load")
    sources, why = conform_sources(None, scheduled=True)
    assert sources == ["taxation"] and why.startswith("loaded since conform run")
    published = conform(run_id="scheduled-taxation", sources=sources)
    assert published["mode"] == "delta" and published["reason"] == "changes from taxation"
    assert conform_sources(None, scheduled=True)[0] == [], "published: nothing is pending"
    assert conform_sources(None, scheduled=False) == (None, "a manual run builds what every source feeds")
    assert conform_sources(["taxation", "taxation"], scheduled=True) == (["taxation"], "asked for")
    with pytest.raises(ConfigError, match=r"no source file .*nowhere"):
        conform_sources(["nowhere"], scheduled=False)
    assert_equal_to_a_full_refresh(dbs.warehouse)
