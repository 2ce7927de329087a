"""Evolutionary and random search under a budget (compression/evolution.py) on an objective known by hand."""
import numpy as np
import pytest

from compression import evolution
from compression.supernet import Architecture, SearchSpace

SPACE = SearchSpace(depths=(1, 2, 3, 4, 5, 6), heads=(1, 2, 4, 8), ffn=(64, 128, 256, 512, 1024),
                    widths=(64, 128, 256))


def cost(a: Architecture) -> float:  # a FLOP-like size
    return sum(a.width * (4 * 16 * h + 2 * f) for h, f in zip(a.heads, a.ffn))


def loss(a: Architecture) -> float:  # bigger is better, with diminishing returns; heads help more than FFN
    return 5.0 - sum(np.log1p(h) + 0.3 * np.log1p(f / 64) for h, f in zip(a.heads, a.ffn)) * np.log(a.width) / 10


BUDGET = 0.3 * cost(SPACE.largest())
within = lambda a: cost(a) <= BUDGET


def test_every_architecture_evaluated_is_in_the_space_and_the_budget_and_a_seed_fixes_the_result():
    result = evolution.evolutionary_search(SPACE, loss, within, np.random.default_rng(0), population=10,
                                           generations=8, parents=4, mutations=3)
    assert all(SPACE.contains(a) and within(a) for a, _ in result.evaluations)
    assert result.best_score == min(s for _, s in result.evaluations) == loss(result.best)
    again = evolution.evolutionary_search(SPACE, loss, within, np.random.default_rng(0), population=10,
                                          generations=8, parents=4, mutations=3)
    assert again.best == result.best and again.evaluations == result.evaluations
    control = evolution.random_search(SPACE, loss, within, np.random.default_rng(0), result.count)
    assert control.count == result.count and all(within(a) for a, _ in control.evaluations)


def test_evolution_beats_random_search_with_as_many_evaluations_on_average():
    evolved, sampled = [], []
    for seed in range(5):
        e = evolution.evolutionary_search(SPACE, loss, within, np.random.default_rng(seed), population=10,
                                          generations=10, parents=4, mutations=3)
        r = evolution.random_search(SPACE, loss, within, np.random.default_rng(100 + seed), e.count)
        evolved.append(e.best_score)
        sampled.append(r.best_score)
    assert np.mean(evolved) < np.mean(sampled)


def test_a_budget_below_the_smallest_architecture_and_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="budget is below the smallest architecture"):
        evolution.evolutionary_search(SPACE, loss, lambda a: cost(a) < cost(SPACE.smallest()),
                                      np.random.default_rng(0))
    with pytest.raises(ValueError, match="needs 1 <= parents < population"):
        evolution.evolutionary_search(SPACE, loss, within, np.random.default_rng(0), population=4, parents=4)
    with pytest.raises(ValueError, match="budget is below"):
        evolution.random_search(SPACE, loss, lambda a: False, np.random.default_rng(0), 5)
