"""``ndc warehouse current`` and ``ndc warehouse upgrade`` on a real, empty warehouse."""

from __future__ import annotations

from click.testing import CliRunner

from ndc.cli import main
from ndc.warehouse import schema
from tests.helpers.database import scalar


def test_upgrade_prints_the_revision_and_current_says_whether_it_is_the_head(dbs):
    runner = CliRunner(env={"NDC_WAREHOUSE_URL": dbs.warehouse})
    head = schema.head()

    def ndc(*args: str) -> str:
        result = runner.invoke(main, ["warehouse", *args])
        assert result.exit_code == 0, result.output
        return result.output.strip()

    assert ndc("current") == f"none (head is {head}: `ndc warehouse upgrade`)"
    assert ndc("upgrade") == f"{head} (upgraded from none)"
    assert scalar(dbs.warehouse, "select version_num from ndc_meta.alembic_version") == head
    assert ndc("upgrade") == f"{head} (already current)"
    assert ndc("current") == f"{head} (head)"
