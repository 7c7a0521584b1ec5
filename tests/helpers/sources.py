"""Source databases written for a test from frames it builds itself."""

from __future__ import annotations

import polars as pl
from ndc_lab.simulate import population


def write_citizens(url: str, frame: pl.DataFrame) -> None:
    """A population source at ``url`` holding exactly the citizens of ``frame`` (no households, no changes)."""
    empty = population.simulate(population.PopulationSpec(citizens=10, defect_rate=0))
    sim = population.SimulatedPopulation(frame, empty.households.clear(), empty.residence_changes.clear(),
                                         empty.manifest.clear())
    population.write(url, sim, population.PopulationSpec())
