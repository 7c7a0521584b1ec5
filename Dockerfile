# The one image of the deployment (docker-compose.yml tags it ndc-platform:<version of pyproject.toml>): Airflow
# 3.3.2 on Python 3.11 (the pins of pyproject.toml) with this project installed, its DAGs, plugins and dbt project,
# and the dbt manifest the conform DAG is rendered from. Every Airflow component, the airflow-init job and the
# simulated insurance API run from it.
FROM apache/airflow:3.3.2-python3.11

# The [mysql] extra (apache-airflow-providers-mysql) compiles mysqlclient: headers, pkg-config and a compiler.
USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential default-libmysqlclient-dev pkg-config \
 && apt-get autoremove -yqq --purge \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/*

# The project lives in /opt/ndc and is installed editable: the package runs from this checkout, so the defaults of
# NDC_DAGS_DIR (sources, exchanges, agencies, agreements, contracts) and NDC_DBT_PROJECT_DIR are its dags/ and
# dbt_project/ (ndc.settings). Named volumes are mounted on folders that exist in the image, so they start owned by
# airflow (uid 50000, gid 0) instead of root.
RUN mkdir -p /opt/ndc /opt/airflow/drops/education /opt/airflow/ndc /opt/airflow/auth \
 && chown -R airflow:0 /opt/ndc /opt/airflow/drops /opt/airflow/ndc /opt/airflow/auth \
 && chmod -R g+rwX /opt/ndc /opt/airflow/drops /opt/airflow/ndc /opt/airflow/auth

USER airflow
WORKDIR /opt/ndc
COPY --chown=airflow:0 pyproject.toml README.md ./
COPY --chown=airflow:0 plugins/ plugins/
COPY --chown=airflow:0 dags/ dags/
COPY --chown=airflow:0 dbt_project/ dbt_project/
COPY --chown=airflow:0 deploy/ deploy/

# Airflow's own version is named too, so that pip never replaces the image's Airflow (pyproject pins the same).
# The base image carries providers this platform does not use; pip check lists any conflict they have with the
# project's pins without failing the build (the project's own set is checked clean in CI).
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -e ".[mysql]" \
 && { pip check || echo "pip check: the conflicts above concern packages of the base image, see docs/deploy.md"; }

# The manifest Cosmos renders the conform DAG from (dbt parse needs no database); dbt's target/ and logs/ stay
# writable for the dbt builds that workers run.
ENV DBT_SEND_ANONYMOUS_USAGE_STATS=False \
    DO_NOT_TRACK=1
RUN ndc dbt parse \
 && ndc sources validate \
 && chmod -R g+rwX /opt/ndc

WORKDIR /opt/airflow
