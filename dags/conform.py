"""The conform DAG: freshness gate, one dbt build with a task per model, then write-audit-publish of the shared views.

Needs dbt_project/target/manifest.json: run ``ndc dbt parse`` after changing the dbt project.
"""

from ndc.airflow.conform import build_conform_dag

conform = build_conform_dag()
