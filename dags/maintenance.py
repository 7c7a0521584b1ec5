"""Maintenance: the daily purge of personal data (quarantine, superseded landing history) past its retention, and
the hourly collection of consumer reads."""

from ndc.airflow.maintenance import build_purge_dag, build_reads_dag

purge_personal_data = build_purge_dag()
collect_consumer_reads = build_reads_dag()
