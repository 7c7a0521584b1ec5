"""Simulated national databases: deterministic per seed, Vietnamese data, and a manifest of every injected defect.

The manifest (``simulator.defect_manifest`` in the source database) is ground truth for tests: table, key, kind,
expected outcome (``quarantined``, ``superseded``, ``repaired``, ``exception``) and, where a contract must catch
it, the check that must fail.
"""

from __future__ import annotations

from ndc_lab.simulate.manifest import MANIFEST_DDL, Defect

__all__ = ["MANIFEST_DDL", "Defect"]
