"""Extract DAGs, one per national database, generated from the YAML files in ``dags/sources/``.

To add a source, add ``dags/sources/<name>.yml`` (run ``ndc sources validate``); nothing here changes.
"""

from pathlib import Path

from ndc.airflow.factory import extract_dags

globals().update(extract_dags(Path(__file__).parent / "sources"))
