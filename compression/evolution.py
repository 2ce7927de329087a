"""Evolutionary architecture search under a budget, and random search with as many evaluations (HAT's search).

Wang et al. 2020 search the SuperTransformer's space with an evolutionary
algorithm: a population of architectures within the hardware budget, the
best `parents` kept each generation, the rest replaced by mutations and
crossovers of them (only children within the budget are kept), each scored
by its loss with inherited weights. The search reads the budget only through
`within_budget` (a latency predictor, or exact FLOP or parameter counts) and
the score only through `score`, and draws everything from one numpy
Generator, so a fixed seed gives the same result. `random_search` is the
control: as many evaluations, of uniformly sampled architectures within the
budget.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from compression.supernet import Architecture, SearchSpace

MAX_TRIES = 1000  # draws to find one architecture within the budget before the search gives up


@dataclasses.dataclass
class SearchResult:
    """The best architecture found, its score, and every evaluation in order (architecture, score)."""

    best: Architecture
    best_score: float
    evaluations: list[tuple[Architecture, float]]

    @property
    def count(self) -> int:
        return len(self.evaluations)


class _Scorer:
    # Scores each distinct architecture once; `evaluations` counts distinct ones, as the papers count.
    def __init__(self, score: Callable[[Architecture], float]):
        self.score, self.cache, self.evaluations = score, {}, []

    def __call__(self, arch: Architecture) -> float:
        if arch not in self.cache:
            self.cache[arch] = float(self.score(arch))
            self.evaluations.append((arch, self.cache[arch]))
        return self.cache[arch]

    def result(self) -> SearchResult:
        best, value = min(self.evaluations, key=lambda e: e[1])
        return SearchResult(best, value, list(self.evaluations))


def _check_budget(space: SearchSpace, within_budget: Callable[[Architecture], bool]) -> None:
    if not within_budget(space.smallest()):
        raise ValueError(f"the budget is below the smallest architecture of the space "
                         f"({space.smallest().as_dict()}): no architecture can meet it; raise the budget")


def _draw(make: Callable[[], Architecture], within_budget: Callable[[Architecture], bool]) -> Architecture:
    for _ in range(MAX_TRIES):
        arch = make()
        if within_budget(arch):
            return arch
    raise ValueError(f"no architecture within the budget in {MAX_TRIES} draws: the budget admits too small a "
                     f"part of the space; raise it or narrow the space")


def evolutionary_search(space: SearchSpace, score: Callable[[Architecture], float],
                        within_budget: Callable[[Architecture], bool], rng: np.random.Generator, *,
                        population: int = 10, generations: int = 20, parents: int = 5, mutations: int = 3,
                        mutation_probability: float = 0.3) -> SearchResult:
    """HAT's evolution: lowest `score` within the budget (see the module docstring).

    Each generation keeps the `parents` best of the population and fills it
    back to `population` with `mutations` mutated parents and crossovers of
    two parents (the rest).
    """
    if not (isinstance(population, int) and isinstance(parents, int) and 1 <= parents < population):
        raise ValueError(f"evolution needs 1 <= parents < population (got parents={parents}, "
                         f"population={population})")
    if not (isinstance(mutations, int) and 0 <= mutations <= population - parents):
        raise ValueError(f"evolution mutations {mutations} must be in [0, population - parents = "
                         f"{population - parents}]")
    if not (isinstance(generations, int) and generations >= 1):
        raise ValueError(f"evolution generations {generations!r} must be a positive integer")
    _check_budget(space, within_budget)
    scorer = _Scorer(score)
    members = [_draw(lambda: space.sample(rng), within_budget) for _ in range(population)]
    for _ in range(generations):
        ranked = sorted(set(members), key=lambda a: (scorer(a), members.index(a)))
        kept = ranked[:parents]
        children = [_draw(lambda: space.mutate(kept[rng.integers(len(kept))], rng, mutation_probability),
                          within_budget) for _ in range(mutations)]
        while len(kept) + len(children) < population:
            a, b = (kept[i] for i in rng.choice(len(kept), size=2, replace=len(kept) < 2))
            children.append(_draw(lambda: space.crossover(a, b, rng), within_budget))
        members = kept + children
    for arch in members:
        scorer(arch)
    return scorer.result()


def random_search(space: SearchSpace, score: Callable[[Architecture], float],
                  within_budget: Callable[[Architecture], bool], rng: np.random.Generator,
                  evaluations: int) -> SearchResult:
    """The control: `evaluations` distinct architectures sampled uniformly within the budget; the best."""
    _check_budget(space, within_budget)
    scorer = _Scorer(score)
    for _ in range(MAX_TRIES * max(evaluations, 1)):
        if len(scorer.evaluations) >= evaluations:
            break
        scorer(_draw(lambda: space.sample(rng), within_budget))
    return scorer.result()
