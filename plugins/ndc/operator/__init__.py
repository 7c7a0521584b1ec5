"""The operator's page: per source and per shared dataset, freshness against its SLA, the last load, contract pass
rates, open quarantine, sharing transactions and open alerts — aggregates only.

* :mod:`ndc.operator.views`: the reader's session (role ``ndc_operator``, read-only) and its queries on the
  ``ndc_meta.ops_*`` views (made by the platform's schema, :mod:`ndc.warehouse.schema`);
* :mod:`ndc.operator.summary`: the figures per dataset (freshness thresholds from the dbt manifest);
* :mod:`ndc.operator.charts`: small server-side SVG charts; :mod:`ndc.operator.page`: the HTML;
* :mod:`ndc.operator.app`: the page's FastAPI app; :mod:`ndc.airflow.operator_page` puts it behind Airflow's login
  and the Airflow plugin (``plugins/ndc_plugin.py``) mounts it at ``/ndc``.

None of it imports Airflow.
"""
