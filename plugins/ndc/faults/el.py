"""Fault scenarios of extract-and-load (1, 2, 3, 5, 6): see :mod:`ndc.faults`."""
