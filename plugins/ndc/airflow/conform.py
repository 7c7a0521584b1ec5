"""The conform DAG: dbt through astronomer-cosmos, then write-audit-publish.

``choose_build_schema`` picks the build schema consumers are not reading; Cosmos renders one task per dbt node
from the manifest that ``ndc dbt parse`` wrote (``LoadMode.DBT_MANIFEST``: no dbt call at DAG parse time), each
running ``dbt build`` for its node (so operators see each model and its tests); ``publish`` switches every
``shared.<model>`` view to the new build in one transaction and emits the stable ``shared.<model>`` Assets.
If any model fails, ``publish`` does not run and consumers keep the last good build.
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Asset, task

from ndc import dbt
from ndc.airflow.factory import DEFAULT_ARGS, landing_asset, warehouse_uri
from ndc.registry import load_sources

BUILD_SCHEMA_XCOM = "{{ ti.xcom_pull(task_ids='choose_build_schema') }}"


def shared_asset(model: str) -> Asset:
    return Asset(name=f"shared.{model}", uri=warehouse_uri("shared", model), group="shared")


def _dbt_group():
    from cosmos import DbtTaskGroup, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
    from cosmos.constants import InvocationMode, LoadMode, TestBehavior

    return DbtTaskGroup(
        group_id="dbt",
        project_config=ProjectConfig(dbt.PROJECT_DIR, manifest_path=dbt.MANIFEST, project_name="ndc"),
        profile_config=ProfileConfig(profile_name="ndc", target_name="warehouse",
                                     profiles_yml_filepath=dbt.PROJECT_DIR / "profiles.yml"),
        render_config=RenderConfig(load_method=LoadMode.DBT_MANIFEST, test_behavior=TestBehavior.BUILD),
        execution_config=ExecutionConfig(dbt_executable_path=dbt.dbt_executable(),
                                         invocation_mode=InvocationMode.SUBPROCESS),
        # "buildable": a test runs in the task of its last-built parent only. dbt's default ("eager") would also
        # run a relationships test in the other parent's task, before this build of the tested model exists.
        operator_args={"vars": {"ndc_build_schema": BUILD_SCHEMA_XCOM}, "install_deps": False,
                       "append_env": True, "emit_datasets": False,
                       "dbt_cmd_flags": ["--indirect-selection", "buildable"]},
    )


def build_conform_dag(sources_dir: Path) -> DAG:
    # The dbt profile reads NDC_DBT_* (derived from NDC_WAREHOUSE_URL; no connection is made here).
    os.environ.update(dbt.dbt_env())
    landing = [landing_asset(s.landing_schema, t.name) for s in load_sources(sources_dir) for t in s.tables]
    models = sorted(dbt.shared_models())
    with DAG(
        dag_id="conform",
        description="dbt conform (Cosmos) into the inactive build schema, then publish shared views",
        schedule=landing,
        start_date=pendulum.datetime(2024, 7, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        default_args={**DEFAULT_ARGS, "retries": 1},
        tags=["conform", "dbt", "publish"],
        doc_md=__doc__,
    ) as dag:

        @task
        def choose_build_schema() -> str:
            from ndc import warehouse
            from ndc.publish import inactive_schema
            from ndc.settings import get_settings

            with warehouse.connect(get_settings().warehouse_url) as conn:
                warehouse.ensure_meta(conn)
                return inactive_schema(conn)

        @task(outlets=[shared_asset(m) for m in models])
        def publish(build_schema: str, run_id=None) -> dict:
            from ndc.jobs import publish_build

            return publish_build(build_schema, run_id=run_id)

        chosen = choose_build_schema()
        group = _dbt_group()
        chosen >> group >> publish(chosen)
    return dag
