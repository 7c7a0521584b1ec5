"""Extract DAGs of the national databases in `dags/sources/education/` (one DAG file per owner agency).

Airflow parses this agency's source files only. To add a source, add `dags/sources/education/<name>.yml` (run
`ndc sources validate`); nothing here changes. Written by `ndc sources new`.
"""

from ndc.airflow.factory import agency_dags

globals().update(agency_dags(__file__))
