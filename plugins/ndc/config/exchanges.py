"""Direct exchanges: one YAML file per exchange under ``dags/exchanges/`` (provider table, consumer table, contract,
schedule, purpose and legal basis), validated by :class:`ExchangeConfig` (``ndc exchange validate``)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ndc.config import files
from ndc.errors import ConfigError
from ndc.settings import get_settings


def exchanges_dir() -> Path:
    """``NDC_EXCHANGES_DIR``, or ``exchanges/`` of the DAG bundle."""
    return get_settings().exchanges_dir


class ProviderConfig(files.StrictConfig):
    conn_id: str = Field(description="Airflow connection id of the provider's database (AIRFLOW_CONN_<ID>)")
    engine: Literal["postgresql", "mysql"]
    schema_name: str = Field(default="public", alias="schema",
                             description="PostgreSQL schema (MySQL has none: the database of the URL is read)")
    table: str
    primary_key: list[str] = Field(min_length=1)
    incremental_column: str

    _names = field_validator("conn_id", "schema_name", "table", "incremental_column")(files.check_identifier)

    _key = field_validator("primary_key")(files.identifiers)


class ConsumerConfig(files.StrictConfig):
    conn_id: str = Field(description="Airflow connection id of the consumer's PostgreSQL database")
    engine: Literal["postgresql"] = "postgresql"
    schema_name: str = Field(alias="schema")
    table: str

    _names = field_validator("conn_id", "schema_name", "table")(files.check_identifier)


class ExchangeConfig(files.StrictConfig):
    name: str
    description: str
    provider_agency: str
    consumer_agency: str
    legal_basis: str = Field(description="the law or agreement that allows the exchange")
    purpose: str = Field(description="what the consumer uses the data for")
    owner_contact: str | None = Field(default=None, description="who to contact when the exchange fails")
    provider: ProviderConfig
    consumer: ConsumerConfig
    contract: str = Field(description="contract name in the contract registry, e.g. enterprise.enterprises")
    schedule: str
    start_date: date
    lookback: timedelta = timedelta(0)
    path: Path | None = Field(default=None, exclude=True)

    _name = field_validator("name")(files.check_identifier)

    _schedule = field_validator("schedule")(files.cron_schedule)

    _lookback = field_validator("lookback")(files.non_negative_duration)

    @model_validator(mode="after")
    def _incremental_not_in_key(self) -> ExchangeConfig:
        if self.provider.incremental_column in self.provider.primary_key:
            raise ValueError("provider.incremental_column must not be part of provider.primary_key")
        return self

    @property
    def dataset(self) -> str:
        """The name alerts and contract results use for this exchange."""
        return f"exchange.{self.name}"

    def where(self) -> str:
        return str(self.path) if self.path else f"exchange {self.name}"


def load_exchange(path: Path) -> ExchangeConfig:
    return files.load_config(path, ExchangeConfig, "exchange")


def load_exchanges(directory: Path) -> list[ExchangeConfig]:
    """Every exchange file in ``directory`` (none if it does not exist); one ConfigError lists every bad file."""
    return files.load_all(directory, load_exchange)


def find_exchange(name: str, directory: Path | None = None) -> ExchangeConfig:
    directory = directory or exchanges_dir()
    path = directory / f"{name}.yml"
    if not path.exists():
        known = ", ".join(p.stem for p in sorted(directory.glob("*.yml"))) or "none"
        raise ConfigError(f"no exchange file {path} (exchanges in {directory}: {known})")
    return load_exchange(path)
