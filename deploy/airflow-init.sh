#!/usr/bin/env bash
# The airflow-init job of docker-compose.yml (runs once per `docker compose up`, before every Airflow component):
#   1. Airflow's metadata database: airflow db migrate (creates it on the first run, upgrades after an image upgrade);
#   2. the platform's configuration: ndc sources validate, ndc exchange validate (a bad YAML file stops here,
#      named by file and field, instead of as a DAG import error);
#   3. one Airflow pool per source (ndc sources pools | airflow pools import), as `ndc demo` does;
#   4. the simulated national databases (ndc simulate <source>), once: NDC_SIMULATE_ON_INIT=once (default) seeds
#      them when $NDC_DATA_DIR/simulated is missing, `always` reseeds on every run (it rewrites the sources),
#      `never` skips (real source systems).
# Each step is idempotent. The image's entrypoint has already waited for the metadata database (airflow db check).
set -euo pipefail

say() { printf '[airflow-init] %s\n' "$*"; }

say "1/4 airflow db migrate"
airflow db migrate

say "2/4 ndc sources validate; ndc exchange validate"
ndc sources validate
ndc exchange validate

say "3/4 pools: ndc sources pools | airflow pools import"
pools="$(mktemp --suffix=.json)"
trap 'rm -f "$pools"' EXIT
# What `ndc sources pools` prints, written straight to the file: Airflow's own log lines go to stdout too.
python - "$pools" <<'PY'
import json
import sys

from ndc.airflow.factory import pools
from ndc.config.sources import load_sources
from ndc.settings import get_settings

with open(sys.argv[1], "w", encoding="utf-8") as handle:
    json.dump(pools(load_sources(get_settings().sources_dir)), handle)
PY
airflow pools import "$pools"

mode="${NDC_SIMULATE_ON_INIT:-once}"
citizens="${NDC_SIMULATE_CITIZENS:-100000}"
seed="${NDC_SIMULATE_SEED:-42}"
marker="${NDC_DATA_DIR:?NDC_DATA_DIR is set by docker-compose.yml}/simulated"
case "$mode" in
  never)
    say "4/4 simulated sources: skipped (NDC_SIMULATE_ON_INIT=never)"
    ;;
  once | always)
    if [[ "$mode" == once && -f "$marker" ]]; then
      say "4/4 simulated sources: already seeded ($(cat "$marker")); NDC_SIMULATE_ON_INIT=always reseeds"
    else
      say "4/4 simulated sources: $citizens citizens, seed $seed"
      for source in population enterprise taxation insurance education; do
        ndc simulate "$source" --citizens "$citizens" --seed "$seed"
      done
      printf 'citizens=%s seed=%s at %s\n' "$citizens" "$seed" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$marker"
    fi
    ;;
  *)
    echo "NDC_SIMULATE_ON_INIT must be once, always or never, got '$mode'" >&2
    exit 2
    ;;
esac
say "done"
