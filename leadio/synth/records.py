"""What names a synthetic route and what writing it returned: `RouteSpec` (a pure function of seed and index,
made by `route_spec`), `RouteStats` and `SynthSummary`.
"""

from __future__ import annotations

import dataclasses

from leadio.synth.world import FAIL_OUTCOMES, PASS_OUTCOMES, SCENARIOS, TOWNS, WEATHERS, seeded_rng


@dataclasses.dataclass(frozen=True)
class RouteSpec:
    """Everything that names and parameterises one synthetic route; a pure function of (seed, index)."""

    seed: int
    index: int
    scenario: str
    town: str
    weather: str
    name: str
    outcome: str
    passes_filter: bool  # whether LEAD's route filter (docs/format.md §1.2) keeps this route

    @property
    def relpath(self) -> str:
        return f"data/{self.scenario}/{self.name}"


@dataclasses.dataclass(frozen=True)
class RouteStats:
    """What `generate_route` wrote."""

    spec: RouteSpec
    frames: int
    bytes: int
    skipped: bool = False


@dataclasses.dataclass
class SynthSummary:
    """Result of `generate_root`; ``routes`` lists every route of the root, written now or found complete."""

    routes_written: int
    routes_skipped: int
    frames: int
    bytes: int
    seconds: float
    routes: list[RouteStats]

    @property
    def passing(self) -> list[str]:
        """Relative paths of the routes that LEAD's filter keeps."""
        return [r.spec.relpath for r in self.routes if r.spec.passes_filter]


def route_spec(seed: int, index: int) -> RouteSpec:
    """The name, scenario, town, weather and results.json outcome of route ``index`` of a seeded root.

    Exactly one route in five fails LEAD's filter (which one depends on the seed); the failure kinds rotate.
    """
    rng = seeded_rng(seed, index, 0)
    scenario = SCENARIOS[rng.choice(len(SCENARIOS), p=[0.3, 0.15, 0.2, 0.2, 0.15])]
    town, weather = TOWNS[rng.integers(len(TOWNS))], list(WEATHERS)[rng.integers(len(WEATHERS))]
    date = "_".join(f"{v:02d}" for v in (rng.integers(1, 13), rng.integers(1, 29), rng.integers(0, 24),
                                         *rng.integers(0, 60, 2)))
    fails = (index + seed) % 5 == 0
    if fails:
        outcome = list(FAIL_OUTCOMES)[(index // 5 + seed) % len(FAIL_OUTCOMES)]
    else:
        outcome = list(PASS_OUTCOMES)[rng.choice(len(PASS_OUTCOMES), p=[0.6, 0.1, 0.2, 0.1])]
    name = f"{town}_Rep0_{index}_0_route0_{date}"
    return RouteSpec(seed, index, scenario, town, weather, name, outcome, not fails)
