"""What a command acts on: the warehouse (configured, or the embedded server), and its interval in UTC."""

from __future__ import annotations

from ndc.audit.handoff import as_utc

__all__ = ["as_utc", "warehouse_url"]


def warehouse_url() -> str:
    """NDC_WAREHOUSE_URL, or the embedded server (started if needed)."""
    from ndc.warehouse import embedded

    return embedded.ensure_warehouse()
