"""Conform as the conform DAG runs it, for tests that need a published warehouse."""

from __future__ import annotations

from ndc.conform import dbt
from ndc.tasks import prepare_conform, publish_build


def build() -> dict:
    """What the conform DAG does before publishing: the freshness gate, then dbt build into the inactive schema."""
    prepared = prepare_conform(accept_stale=True)
    result = dbt.run(["build"], build_schema=prepared["build_schema"])
    assert result.returncode == 0, result.output[-3000:]
    return prepared


def build_and_publish(run_id: str) -> dict:
    """:func:`build`, then publish the build (gate 2 and the view switch) under ``run_id``."""
    prepared = build()
    publish_build(prepared["build_schema"], run_id=run_id, as_of=prepared["started_at"])
    return prepared
