"""The only part of ``ndc`` that knows Airflow: the DAG factory, the conform, exchange and maintenance DAGs, their
callbacks, and the operator page's login. Everything else in ``ndc`` is a library these call (docs/architecture.md)."""
