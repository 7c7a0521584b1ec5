"""What tests share besides fixtures: the repository's root, database queries, the browser, a webhook."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
