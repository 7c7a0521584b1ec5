"""``ndc sources new <name>``: the files a new national database needs, ready to edit.

A source is a YAML file (dags/sources/<name>.yml: the DAGs follow from it), a contract module
(plugins/ndc/contracts/<name>.py, found by the registry without any other edit), a simulator with its defect
manifest (plugins/ndc/simulate/<name>.py, run by ``ndc simulate <name>``) and a test that checks the simulator's
defects against the contract. The scaffold works as written (one example table), so a data team starts from
something that validates, simulates and loads, then replaces the example.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ndc.errors import ConfigError
from ndc.identifiers import is_identifier
from ndc.settings import REPO_ROOT

ENGINES = ("postgresql", "mysql", "http", "files")

YAML = """\
# {title} — replace this header with what the database is and who owns it.
# Read by ndc.config.sources (validated: `ndc sources validate`) and turned into the DAG `extract_{name}`.
name: {name}
description: >
  What this national database holds, its identifiers and its known quirks.
owner_agency: {owner}
connection_model: centralised
connection:
  conn_id: ndc_src_{name}   # URL from AIRFLOW_CONN_NDC_SRC_{upper}
  engine: {engine}
schedule: "@daily"
start_date: 2024-07-01
lookback: PT2H
max_connections: 2
full_compare_schedule: {compare}
tables:
  - name: records
    source_table: records
    primary_key: [record_id]
    incremental_column: updated_at
    contract: {name}.records
"""

CONTRACT = '''\
"""Contracts of the {name} source, version 1 (scaffolded by `ndc sources new`; edit to the real tables)."""

from __future__ import annotations

import pandera.polars as pa
from pandera.typing.polars import Series

from ndc.contracts.base import UTC_TIMESTAMP, NdcContract, format_matches, not_blank


class Records(NdcContract):
    """One row per record as the source holds it."""

    record_id: str = pa.Field(nullable=True, description="the source's key")
    name: str = pa.Field(nullable=True)
    updated_at: Series[UTC_TIMESTAMP] = pa.Field(nullable=False)  # type: ignore[valid-type]

    class Config:
        name = "{name}.records"
        metadata = {{"version": "1.0.0"}}

    # Checks shared by several contracts come from ndc.contracts.base; a check of this source only is a
    # @pa.check (one column) or @pa.dataframe_check (whole rows) method returning a boolean column.
    _record_id = format_matches("record_id", r"^R\\d{{8}}$")
    _name = not_blank("name")


CONTRACTS = (Records,)
'''

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


@dataclass
class Scaffold:
    files: list[Path]


def new_source(name: str, engine: str, owner: str, root: Path = REPO_ROOT) -> Scaffold:
    if not is_identifier(name) or name in ("base", "common", "manifest"):
        raise ConfigError(f"source name {name!r}: expected a lower-case identifier (letters, digits, _)")
    if engine not in ENGINES:
        raise ConfigError(f"engine {engine!r}: expected one of {', '.join(ENGINES)}")
    compare = "'@weekly'" if engine in ("postgresql", "mysql") else "null"
    values = {"name": name, "upper": name.upper(), "engine": engine, "owner": owner, "compare": compare,
              "title": name.replace("_", " ").title()}
    plan = {
        root / "dags" / "sources" / f"{name}.yml": YAML,
        root / "plugins" / "ndc" / "contracts" / f"{name}.py": CONTRACT,
        root / "plugins" / "ndc" / "simulate" / f"{name}.py": SIMULATOR,
        root / "tests" / f"test_simulate_{name}.py": TEST,
    }
    existing = [str(p) for p in plan if p.exists()]
    if existing:
        raise ConfigError(f"source {name!r} already has files (nothing written): {', '.join(existing)}")
    for path, template in plan.items():
        path.write_text(template.format(**values), encoding="utf-8")
    return Scaffold(list(plan))
