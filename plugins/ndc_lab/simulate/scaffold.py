"""The tooling half of ``ndc sources new``: a simulator with its defect manifest and a test that checks the
simulator's defects against the new source's contract, written into a checkout (``ndc sources new`` calls this
when the checkout has ``plugins/ndc_lab``). ``ndc simulate <name>`` finds the simulator by its module name.
"""

from __future__ import annotations

from pathlib import Path

SIMULATOR = '''\
"""Simulated {name} source (scaffolded by `ndc sources new`): one example table with one defect kind.

Replace with the real tables and every defect the source is known for; each injected defect goes in the
manifest with its expected outcome, so tests compare outcomes with ground truth.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl

from ndc_lab.simulate.common import SimulatedSource, SourceSpec
from ndc_lab.simulate.manifest import Defect, empty_manifest, manifest_rows

BLANK_NAME = Defect("blank_name", "quarantined", "name_not_blank")


def simulate(spec: SourceSpec) -> SimulatedSource:
    rng = np.random.default_rng(spec.seed)
    n = max(10, spec.citizens // 100)
    start = datetime(2024, 7, 1, tzinfo=UTC)
    seconds = rng.integers(0, int((datetime(2026, 1, 1, tzinfo=UTC) - start).total_seconds()), n)
    records = pl.DataFrame({{
        "record_id": [f"R{{i:08d}}" for i in range(n)],
        "name": rng.choice(["Nguyễn Văn An", "Trần Thị Bình", "Lê Hoàng Cường"], n),
        "updated_at": pl.Series((np.datetime64(start.replace(tzinfo=None), "s")
                                 + seconds.astype("timedelta64[s]")).astype("datetime64[us]"))
        .dt.replace_time_zone("UTC"),
    }})
    blank = rng.choice(n, spec.defect_count(n), replace=False)
    records = records.with_row_index("_row").with_columns(
        pl.when(pl.col("_row").is_in(blank.tolist())).then(pl.lit("")).otherwise(pl.col("name")).alias("name")
    ).drop("_row")
    manifest = pl.concat([empty_manifest(), manifest_rows("records", records["record_id"].gather(sorted(blank)),
                                                          BLANK_NAME)])
    return SimulatedSource(tables={{"records": records}}, manifest=manifest)


def write(target: str, sim: SimulatedSource, spec: SourceSpec) -> None:
    """(Re)create the source at ``target``: here a PostgreSQL database; adapt to the engine."""
    import psycopg

    from ndc.errors import NdcError
    from ndc_lab.simulate.common import copy_frame_pg

    if not target.startswith("postgresql://"):
        raise NdcError(f"the scaffolded simulator writes to PostgreSQL only; adapt write() in {{__file__}} "
                       f"for {{target.split(':')[0]}} (see ndc_lab.simulate.enterprise, insurance, education)")
    from ndc_lab.simulate.manifest import MANIFEST_DDL
    from ndc.warehouse.database import ensure_database

    ensure_database(target)
    with psycopg.connect(target) as conn:
        conn.execute("set timezone = 'UTC'")
        conn.execute("drop table if exists records;"
                     " create table records (record_id text, name text, updated_at timestamptz not null)")
        copy_frame_pg(conn, "records", sim.tables["records"])
        conn.execute(MANIFEST_DDL)
        copy_frame_pg(conn, "simulator.defect_manifest", sim.manifest)


def default_target() -> str:
    from ndc.warehouse import connections

    return connections.source_url("ndc_src_{name}", "{engine}")


def describe(sim: SimulatedSource) -> str:
    return f"{{sim.tables['records'].height:,}} records"
'''

TEST = '''\
"""The {name} simulator's defects meet the contract (scaffolded by `ndc sources new`)."""

from ndc.contracts import get_contract
from ndc.contracts.validation import validate
from ndc_lab.simulate import {name}
from ndc_lab.simulate.common import SourceSpec


def test_every_quarantined_defect_is_caught_and_no_clean_row_is():
    sim = {name}.simulate(SourceSpec(citizens=5_000, seed=3, defect_rate=0.01))
    gated = validate(sim.tables["records"], get_contract("{name}.records"))
    expected = set(sim.manifest.filter(sim.manifest["expected_outcome"] == "quarantined")["record_key"])
    assert expected and set(gated.rejected["record_id"]) == expected
'''


def simulator_files(name: str, engine: str, checkout: Path) -> dict[Path, str]:
    """The simulator and its test for source ``name`` in ``checkout`` and their text (nothing is written)."""
    values = {"name": name, "engine": engine}
    return {checkout / "plugins" / "ndc_lab" / "simulate" / f"{name}.py": SIMULATOR.format(**values),
            checkout / "tests" / "lab" / "simulate" / f"test_{name}.py": TEST.format(**values)}
