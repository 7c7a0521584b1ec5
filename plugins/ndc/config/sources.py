"""The registry of national databases: one YAML file per source under ``dags/sources/``.

Each file is validated by :class:`SourceConfig`; an error names the file, the field and what was expected, so a
data team adding a source sees exactly what to fix (``ndc sources validate``).
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ndc.config import files
from ndc.errors import ConfigError
from ndc.identifiers import is_identifier


class ConnectionConfig(files.StrictConfig):
    conn_id: str = Field(description="Airflow connection id; its URL comes from AIRFLOW_CONN_<ID>")
    engine: Literal["postgresql", "mysql", "http", "files"]

    _id = field_validator("conn_id")(files.check_identifier)


class RowCountDrop(files.StrictConfig):
    """Gate 1's whole-batch rule: block a load whose row count fell too far against the last comparable load."""

    max_share: float = Field(gt=0, lt=1, description="the largest allowed drop, e.g. 0.5 = half the last load")
    min_previous_rows: int = Field(default=1000, ge=1,
                                   description="only compare when the last load had at least this many rows")


class TableConfig(files.StrictConfig):
    name: str = Field(description="landing table name")
    source_schema: str = "public"
    source_table: str
    primary_key: list[str] = Field(min_length=1)
    incremental_column: str
    contract: str = Field(description="contract name in the contract registry, e.g. population.citizens")
    tombstone_column: str | None = Field(
        default=None, description="a column whose non-null value marks the row deleted at the source")
    row_count_drop: RowCountDrop | None = Field(
        default=None, description="block a load whose rows fell by more than max_share against the last load of "
        "the same window length (full refreshes against full refreshes; a files run compares the files it read). "
        "Meant for sources whose runs carry a stable volume: full snapshots, full refreshes, periodic file drops")
    file_glob: str | None = Field(
        default=None, description="files engine: files of this table under the drop folder "
        "[default: <source_table>/**/*.csv and .parquet]")

    _names = field_validator("name", "source_schema", "source_table", "incremental_column")(files.check_identifier)

    @field_validator("tombstone_column")
    @classmethod
    def _tombstone(cls, value: str | None) -> str | None:
        return None if value is None else files.check_identifier(value)

    @field_validator("file_glob")
    @classmethod
    def _glob(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith("/") or ".." in Path(value).parts):
            raise ValueError("expected a pattern relative to the drop folder, without '..'")
        return value

    _key = field_validator("primary_key")(files.identifiers)


class SourceConfig(files.StrictConfig):
    name: str
    description: str
    owner_agency: str
    owner_contact: str | None = Field(
        default=None, description="who to contact about this source's data (named in contract-failure alerts)")
    connection_model: Literal["centralised", "direct"]
    connection: ConnectionConfig
    schedule: str
    start_date: date
    lookback: timedelta = timedelta(0)
    max_connections: int = Field(default=2, ge=1, le=64,
                                 description="slots of the source's Airflow pool: concurrent connections to it")
    full_compare_schedule: str | None = Field(
        default="@weekly", description="when the full-compare DAG looks for rows deleted at the source "
        "(SQL engines; null turns it off)")
    legacy_encoding: str | None = Field(
        default=None, description="files engine: the encoding of files that are not UTF-8, e.g. cp1258")
    tables: list[TableConfig] = Field(min_length=1)
    path: Path | None = Field(default=None, exclude=True)

    _name = field_validator("name")(files.check_identifier)

    _schedules = field_validator("schedule", "full_compare_schedule")(files.cron_schedule)

    @field_validator("legacy_encoding")
    @classmethod
    def _encoding(cls, value: str | None) -> str | None:
        import codecs

        if value is not None:
            try:
                codecs.lookup(value)
            except LookupError:
                raise ValueError("expected an encoding Python knows, e.g. cp1258") from None
        return value

    @model_validator(mode="after")
    def _engine_options(self) -> SourceConfig:
        engine = self.connection.engine
        if self.legacy_encoding and engine != "files":
            raise ValueError("legacy_encoding applies to the files engine only")
        for table in self.tables:
            if table.file_glob and engine != "files":
                raise ValueError(f"tables.{table.name}.file_glob applies to the files engine only")
        return self

    @property
    def is_sql(self) -> bool:
        return self.connection.engine in ("postgresql", "mysql")

    @property
    def compares_keys(self) -> bool:
        """Whether a scheduled full compare looks for deleted rows (SQL sources can list their keys)."""
        return self.is_sql and self.full_compare_schedule is not None

    _lookback = field_validator("lookback")(files.non_negative_duration)

    @model_validator(mode="after")
    def _unique_tables(self) -> SourceConfig:
        files.refuse_repeated([t.name for t in self.tables], "table names must be unique")
        return self

    @property
    def landing_schema(self) -> str:
        return f"landing_{self.name}"

    def table(self, name: str) -> TableConfig:
        for table in self.tables:
            if table.name == name:
                return table
        known = ", ".join(t.name for t in self.tables)
        raise ConfigError(f"source {self.name!r} has no table {name!r} (tables: {known})")


def load_source(path: Path) -> SourceConfig:
    return files.load_config(path, SourceConfig, "source")


def agency_of(source: SourceConfig) -> str | None:
    """The owner agency's folder (``<sources>/<agency>/<name>.yml``); None for a file outside an agency folder."""
    if source.path is None or not is_identifier(source.path.parent.name):
        return None
    return source.path.parent.name


def source_files(directory: Path) -> list[Path]:
    """Every source file: ``<directory>/<agency>/*.yml`` (and ``<directory>/*.yml``, which no DAG file reads:
    ``ndc sources validate`` names them)."""
    if not directory.is_dir():
        return []
    return sorted([*directory.glob("*.yml"), *directory.glob("*/*.yml")])


def load_sources(directory: Path, problems: list[str] | None = None) -> list[SourceConfig]:
    """Every source file under ``directory`` (agency folders); raises one ConfigError listing every invalid file.
    Files are read once per content (:func:`ndc.config.files.cached_config`): at 3,000 sources an unchanged
    registry costs a ``stat`` per file."""
    found = files.load_paths(source_files(directory), load_source, problems)
    if problems is None:
        files.refuse_repeated_names(found, "source")
    return found


def load_agency_sources(directory: Path) -> list[SourceConfig]:
    """The source files of one agency folder only: what the agency's DAG file parses (its cost does not grow with
    the other agencies' sources)."""
    return files.load_paths(sorted(directory.glob("*.yml")), load_source)


def find_source(directory: Path, name: str) -> SourceConfig:
    """Source ``name``: ``<directory>/<agency>/<name>.yml`` (one glob over the agency folders)."""
    found = sorted([*directory.glob(f"*/{name}.yml"), *directory.glob(f"{name}.yml")]) \
        if is_identifier(name) else []
    if not found:
        every = source_files(directory)
        known = ", ".join(p.stem for p in every[:20]) or "none"
        raise ConfigError(f"no source file {directory}/<agency>/{name}.yml (sources in {directory}: {known}"
                          f"{' …' if len(every) > 20 else ''})")
    if len(found) > 1:
        raise ConfigError(f"source {name!r} is defined more than once: {', '.join(map(str, found))}")
    return load_source(found[0])


def pool_name(source: SourceConfig) -> str:
    """The Airflow pool that caps concurrent connections to a source (``max_connections`` slots)."""
    return f"ndc_source_{source.name}"


def pools(sources: list[SourceConfig]) -> dict[str, dict]:
    """Pool definitions in the format of ``airflow pools import``."""
    return {pool_name(s): {"slots": s.max_connections, "description": f"connections to {s.name} "
                           f"({s.owner_agency})", "include_deferred": False} for s in sources}
