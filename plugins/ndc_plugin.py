"""The NDC platform's Airflow plugin (kept small: Airflow's loader imports every .py under plugins/).

The operator's page (a FastAPI app and an external view) is registered here in the operations issue.
"""

from airflow.plugins_manager import AirflowPlugin


class NdcPlugin(AirflowPlugin):
    name = "ndc"
