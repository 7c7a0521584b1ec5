"""The operator's page behind Airflow's login: the app the Airflow plugin (``plugins/ndc_plugin.py``) mounts at
``/ndc``. The page itself (:mod:`ndc.operator`) knows no Airflow; only its authentication comes from here."""

from __future__ import annotations

from fastapi import FastAPI


def create_app() -> FastAPI:
    from airflow.api_fastapi.core_api.security import get_user

    from ndc.operator.app import create_app as operator_app

    return operator_app(login=get_user)
