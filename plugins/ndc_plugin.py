"""The NDC platform's Airflow plugin (kept small: Airflow's loader imports every .py under plugins/).

It mounts the operator's page (``ndc.operator.app``, a FastAPI app behind Airflow's login) at ``/ndc`` on the API
server, and adds it to the UI's Browse menu: Airflow shows ``href`` (resolved from the server's root; it must end
in ``/``) in an iframe at ``/plugin/ndc_operations``. See docs/operator-page.md.
"""

from airflow.plugins_manager import AirflowPlugin

from ndc.operator.app import create_app


class NdcPlugin(AirflowPlugin):
    name = "ndc"
    fastapi_apps = [{"app": create_app(), "url_prefix": "/ndc", "name": "NDC operator's page"}]
    external_views = [{"name": "NDC operations", "href": "ndc/", "url_route": "ndc_operations", "category": "browse"}]
