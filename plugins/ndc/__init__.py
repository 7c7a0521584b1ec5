"""NDC Data Sharing & Coordination Platform: the core library.

The core never imports Airflow (only ``ndc.airflow`` does), so every step runs and is tested without a
scheduler and the ``ndc`` CLI starts fast.
"""

__version__ = "0.1.0"
