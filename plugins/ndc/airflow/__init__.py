"""The only part of ``ndc`` that knows Airflow: the DAG factory (and, later, Cosmos set-up and the UI plugin)."""
