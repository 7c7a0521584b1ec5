"""``ndc sources new <name>``: the platform files a new national database needs, ready to edit.

A source is a YAML file in its owner agency's folder (``<dags>/sources/<agency>/<name>.yml``: the DAGs follow from
it) and a contract module (``<dags>/contracts/<name>.py``, loaded by the contract registry without any other edit),
both in the DAG bundle (``NDC_DAGS_DIR``), never in the installed package. An agency's first source also gets the
agency's DAG file (``<dags>/extract/<agency>.py``), which Airflow parses for that agency's sources only. The
scaffold works as written (one example table), so a data team starts from something that validates and loads,
then replaces the example. In a checkout with the tooling, ``ndc sources new`` also writes a simulator and its
test (:mod:`ndc_lab.simulate.scaffold`).
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

from ndc.errors import ConfigError
from ndc.identifiers import is_identifier

ENGINES = ("postgresql", "mysql", "http", "files")
# "shared" names the shared views' contracts (shared.<model>); "base" is the contracts' base module.
RESERVED_NAMES = ("shared", "base")

YAML = """\
# {title} — replace this header with what the database is and who owns it.
# Read by ndc.config.sources (validated: `ndc sources validate`) and turned into the DAG `extract_{name}` by
# the agency's DAG file, dags/extract/<agency>.py.
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

from ndc.contracts import checks
from ndc.contracts.base import UTC_TIMESTAMP, NdcContract


class Records(NdcContract):
    """One row per record as the source holds it."""

    record_id: str = pa.Field(nullable=True, description="the source's key")
    name: str = pa.Field(nullable=True)
    updated_at: Series[UTC_TIMESTAMP] = pa.Field(nullable=False)  # type: ignore[valid-type]

    class Config:
        name = "{name}.records"
        metadata = {{"version": "1.0.0"}}

    # Checks shared by several contracts come from ndc.contracts.checks; a check of this source only is a
    # @pa.check (one column) or @pa.dataframe_check (whole rows) method returning a boolean column.
    _record_id = checks.format_matches("record_id", r"^R\\d{{8}}$")
    _name = checks.not_blank("name")


CONTRACTS = (Records,)
'''


AGENCY_DAG_FILE = '''\
"""Extract DAGs of the national databases in `dags/sources/{agency}/` (one DAG file per owner agency).

Airflow parses this agency's source files only. To add a source, add `dags/sources/{agency}/<name>.yml` (run
`ndc sources validate`); nothing here changes. Written by `ndc sources new`.
"""

from ndc.airflow.factory import agency_dags

globals().update(agency_dags(__file__))
'''


def agency_slug(owner: str) -> str:
    """An agency folder name from its name: ``Bộ Tài chính`` → ``bo_tai_chinh``."""
    plain = unicodedata.normalize("NFKD", owner.replace("đ", "d").replace("Đ", "D"))
    ascii_only = "".join(c for c in plain if not unicodedata.combining(c)).encode("ascii", "ignore").decode()
    words = "".join(c if c.isalnum() else " " for c in ascii_only.lower()).split()
    return "_".join(words)[:63].rstrip("_") or "agency"


def agency_dag_file(agency: str, dags_dir: Path) -> tuple[Path, str]:
    """The DAG file of an agency folder and its text."""
    return dags_dir / "extract" / f"{agency}.py", AGENCY_DAG_FILE.format(agency=agency)


def source_files(name: str, engine: str, owner: str, dags_dir: Path, agency: str | None = None) -> dict[Path, str]:
    """The files of source ``name`` in the DAG bundle ``dags_dir`` and their text (nothing is written): its YAML
    in the agency folder (``agency``, by default named from ``owner``), its contract, and the agency's DAG file
    when the agency has none yet."""
    agency = agency or agency_slug(owner)
    if not is_identifier(agency):
        raise ConfigError(f"agency {agency!r}: expected a lower-case identifier (letters, digits, _)")
    if not is_identifier(name) or name in RESERVED_NAMES:
        raise ConfigError(f"source name {name!r}: expected a lower-case identifier (letters, digits, _), "
                          f"not {' or '.join(RESERVED_NAMES)}")
    if engine not in ENGINES:
        raise ConfigError(f"engine {engine!r}: expected one of {', '.join(ENGINES)}")
    compare = "'@weekly'" if engine in ("postgresql", "mysql") else "null"
    values = {"name": name, "upper": name.upper(), "engine": engine, "owner": owner, "compare": compare,
              "title": name.replace("_", " ").title()}
    found = {dags_dir / "sources" / agency / f"{name}.yml": YAML.format(**values),
             dags_dir / "contracts" / f"{name}.py": CONTRACT.format(**values)}
    taken = sorted(dags_dir.glob(f"sources/*/{name}.yml"))
    if taken:
        raise ConfigError(f"source {name!r} already exists (nothing written): {taken[0]}")
    dag_file, text = agency_dag_file(agency, dags_dir)
    if not dag_file.exists():
        found[dag_file] = text
    return found


def write_files(files: dict[Path, str]) -> list[Path]:
    """Write every file, making its folder; refuses before writing anything if one of them exists."""
    existing = [str(p) for p in files if p.exists()]
    if existing:
        raise ConfigError(f"these files already exist (nothing written): {', '.join(existing)}")
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return list(files)
