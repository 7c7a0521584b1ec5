"""Direct-exchange DAGs, one per YAML file in ``dags/exchanges/``: provider database -> contract -> consumer database.

To add an exchange, add ``dags/exchanges/<name>.yml`` (run ``ndc exchange validate``); nothing here changes.
"""

from pathlib import Path

from ndc.airflow.exchange import exchange_dags

globals().update(exchange_dags(Path(__file__).parent / "exchanges"))
