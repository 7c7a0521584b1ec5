"""The FastAPI app of the operator's page, mounted by the Airflow plugin at ``/ndc`` on Airflow's API server.

Airflow gives a mounted app no authentication of its own: every route here depends on the login the host passes
(Airflow's ``get_user``, through :mod:`ndc.airflow.operator_page`: the ``Authorization: Bearer`` header or the
``_token`` cookie the UI's login sets), so a request without a valid
login gets 401 — the automatic docs are off (``/docs``, ``/redoc``, ``/openapi.json`` do not exist).

Routes (under ``/ndc``): ``/`` the page; ``/api/summary`` every panel as JSON; ``/api/<panel>`` one of them
(``attention``, ``sources``, ``shared``, ``pass_rates``, ``quarantine``, ``sharing``, ``alerts``). ``?days=``
(1–366, default 30) sets the window of the charts; ``?q=`` searches the sources (dataset, agency, owner) and
``?page=`` / ``?per_page=`` (1–1000, default 100) page them. When the warehouse cannot be read, the page shows a
banner naming the server (never its password) and every route answers 503.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse

from . import page as html_page
from .summary import PANELS, PER_PAGE, summarise
from .views import WarehouseUnavailable, read, reader

DEFAULT_DAYS = 30
NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
# Inline CSS and SVG only; the page may be framed by Airflow's own UI (same origin) and nothing else.
PAGE_HEADERS = {**NO_STORE, "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                "img-src 'self' data:; frame-ancestors 'self'; base-uri 'none'; form-action 'self'"}
Days = Query(DEFAULT_DAYS, ge=1, le=366, description="days covered by the charts (UTC)")
Search = Query("", max_length=200, description="words each found in a source's dataset, agency folder or owner")
Page = Query(1, ge=1, le=100_000, description="page of the sources list")
PerPage = Query(PER_PAGE, ge=1, le=1000, description="sources per page")


def _summary(request: Request, days: int, q: str = "", page: int = 1, per_page: int = PER_PAGE) -> dict:
    # Mounted under Airflow, app_root_path is Airflow's own root: links to its runs start there.
    airflow_root = str(request.scope.get("app_root_path") or "").rstrip("/")
    with reader() as conn:
        snapshot = read(conn, days)
    return summarise(snapshot, days, airflow_root, q=q, page=page, per_page=per_page)


def create_app(login: Callable) -> FastAPI:
    """The page's app; every route depends on ``login`` (the host's authentication, which raises 401 without a
    valid login): :func:`ndc.airflow.operator_page.create_app` passes Airflow's."""
    app = FastAPI(title="NDC operator's page", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=[Depends(login)])

    @app.get("/", response_class=HTMLResponse)
    def operator_page(request: Request, days: int = Days, q: str = Search, page: int = Page,
                      per_page: int = PerPage) -> HTMLResponse:
        try:
            summary = _summary(request, days, q, page, per_page)
        except WarehouseUnavailable as exc:
            return HTMLResponse(html_page.render_error(str(exc), days), status_code=503, headers=PAGE_HEADERS)
        return HTMLResponse(html_page.render(summary), headers=PAGE_HEADERS)

    @app.get("/api/summary")
    def summary_json(request: Request, days: int = Days, q: str = Search, page: int = Page,
                     per_page: int = PerPage) -> JSONResponse:
        try:
            return JSONResponse(_summary(request, days, q, page, per_page), headers=NO_STORE)
        except WarehouseUnavailable as exc:
            return JSONResponse({"error": str(exc)}, status_code=503, headers=NO_STORE)

    @app.get("/api/{panel}")
    def panel_json(request: Request, panel: str, days: int = Days, q: str = Search, page: int = Page,
                   per_page: int = PerPage) -> JSONResponse:
        if panel not in PANELS:
            raise HTTPException(404, f"no panel {panel!r}; panels: {', '.join(PANELS)}")
        try:
            summary = _summary(request, days, q, page, per_page)
        except WarehouseUnavailable as exc:
            return JSONResponse({"error": str(exc)}, status_code=503, headers=NO_STORE)
        extra = {"sources_page": summary["sources_page"]} if panel == "sources" else {}
        return JSONResponse({"generated_at": summary["generated_at"], "days": days, "since": summary["since"],
                             panel: summary[panel], **extra}, headers=NO_STORE)

    return app
