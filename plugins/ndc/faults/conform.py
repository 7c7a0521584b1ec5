"""Fault scenarios of conform, publish and the Celery worker (4, 7, 8): see :mod:`ndc.faults`."""
