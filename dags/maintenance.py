"""Maintenance: the daily purge of personal data (quarantine, superseded landing history) past its retention."""

from ndc.airflow.maintenance import build_purge_dag

purge_personal_data = build_purge_dag()
