"""What a command acts on: the warehouse (configured, or the embedded server) and instants in UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(value: datetime) -> datetime:
    """A ``--start``/``--end`` value: UTC unless it carries an offset."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def warehouse_url() -> str:
    """NDC_WAREHOUSE_URL, or the embedded server (started if needed)."""
    from ndc.warehouse import embedded

    return embedded.ensure_warehouse()
