"""The NDC platform's Airflow plugin (kept small: Airflow's loader imports every .py under plugins/).

It mounts the operator's page (``ndc.airflow.operator_page``, a FastAPI app behind Airflow's login) at ``/ndc`` on
the API server, and adds it to the UI's Browse menu: Airflow shows ``href`` (resolved from the server's root; it
must end in ``/``) in an iframe at ``/plugin/ndc_operations``. See docs/operator-page.md.

Every task process loads the plugins too (for their macros), so the page's app is built on its first request, not
at import: importing it (FastAPI and Airflow's API security) costs about 0.6 s a task.
"""

import threading

from airflow.plugins_manager import AirflowPlugin


class OperatorApp:
    """An ASGI app that builds the operator's page on first use and hands every request to it."""

    def __init__(self) -> None:
        self._app = None
        self._lock = threading.Lock()

    @property
    def app(self):
        if self._app is None:
            with self._lock:
                if self._app is None:
                    from ndc.airflow.operator_page import create_app

                    self._app = create_app()
        return self._app

    async def __call__(self, scope, receive, send) -> None:
        await self.app(scope, receive, send)


class NdcPlugin(AirflowPlugin):
    name = "ndc"
    fastapi_apps = [{"app": OperatorApp(), "url_prefix": "/ndc", "name": "NDC operator's page"}]
    external_views = [{"name": "NDC operations", "href": "ndc/", "url_route": "ndc_operations", "category": "browse"}]
