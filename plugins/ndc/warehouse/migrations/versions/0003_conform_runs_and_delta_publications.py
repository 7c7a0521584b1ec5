"""Conform runs and delta publications (issue 18: conform at the cost of the change).

``ndc_meta.conform_runs`` numbers every conform build (``conform_seq``, strictly increasing): its mode (``full``:
every model rebuilt into the inactive build schema and published by a view switch; ``delta``: only the changed keys
rebuilt and applied to the published tables in one transaction), why, which sources' part of the graph it built,
and the landing horizon it read through. Intermediate models stamp the rows they rewrite with the build's number,
so "changed since the last publish" is ``conform_seq > the published build's``. A publication now names the build
it published and how (``mode``); publications made before this revision are full ones.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"

CONFORM_RUNS = """
create table ndc_meta.conform_runs (
    conform_seq bigint generated always as identity primary key,
    run_id text,
    mode text not null check (mode in ('full', 'delta')),
    reason text not null,
    sources text[],
    models text[] not null,
    changes_through timestamptz not null,
    checksums jsonb not null default '{}',
    started_at timestamptz not null default now()
);
alter table ndc_meta.publications
    add column mode text not null default 'full' check (mode in ('full', 'delta')),
    add column conform_seq bigint references ndc_meta.conform_runs (conform_seq);
"""


def upgrade() -> None:
    op.execute(CONFORM_RUNS)
