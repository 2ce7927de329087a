"""Tests for compression.selection: parameter paths, selectors and first-match rules."""
from typing import NamedTuple

import jax
import numpy as np
import pytest

from compression.selection import leaf_paths, match_rules, path_str, select, selected_paths


def _params():
    """A small Linen-shaped parameter tree (sorted-key flattening order)."""
    return {
        "Dense_0": {"bias": np.zeros(3), "kernel": np.ones((2, 3)), "kernel_scale": np.ones(())},
        "Dense_1": {"bias": np.zeros(1), "kernel": np.ones((3, 1))},
    }


def _selected(tree, mask):
    return [p for p, m in zip(leaf_paths(tree), jax.tree_util.tree_leaves(mask)) if m]


def test_leaf_paths_join_nested_dict_keys_with_slashes():
    tree = {"a": {"b": np.ones(1), "c": {"d": np.ones(2)}}, "e": np.ones(3)}
    assert leaf_paths(tree) == ["a/b", "a/c/d", "e"]


def test_leaf_paths_use_indices_for_list_and_tuple_nodes():
    tree = {"layers": [np.ones(1), {"w": np.ones(1)}], "pair": (np.ones(1), np.ones(1))}
    assert leaf_paths(tree) == ["layers/0", "layers/1/w", "pair/0", "pair/1"]


def test_path_str_uses_attribute_names_for_namedtuple_nodes():
    class Factors(NamedTuple):
        u: np.ndarray
        v: np.ndarray

    tree = {"lowrank": Factors(np.ones(1), np.ones(1))}
    key_paths = [kp for kp, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    assert [path_str(kp) for kp in key_paths] == ["lowrank/u", "lowrank/v"]


def test_regex_selector_is_full_match_so_bare_leaf_name_matches_nothing():
    with pytest.raises(ValueError, match="matches no parameter"):
        select(_params(), "kernel")


def test_regex_selector_with_prefix_wildcard_matches_only_full_paths():
    params = _params()
    # '.*kernel' full-matches 'Dense_0/kernel' but not 'Dense_0/kernel_scale'.
    assert _selected(params, select(params, ".*kernel")) == ["Dense_0/kernel", "Dense_1/kernel"]


def test_select_returns_bool_tree_shaped_like_params():
    params = _params()
    mask = select(params, "Dense_1/.*")
    assert jax.tree_util.tree_structure(mask) == jax.tree_util.tree_structure(params)
    assert mask["Dense_1"] == {"bias": True, "kernel": True}
    assert mask["Dense_0"] == {"bias": False, "kernel": False, "kernel_scale": False}


def test_list_of_regexes_selects_union_of_matches():
    params = _params()
    got = selected_paths(params, ["Dense_0/kernel", ".*bias"])
    assert got == ["Dense_0/bias", "Dense_0/kernel", "Dense_1/bias"]


def test_predicate_selector_sees_path_and_leaf():
    params = _params()

    def is_matrix(path, leaf):
        return np.ndim(leaf) == 2 and path.startswith("Dense_")

    assert selected_paths(params, is_matrix) == ["Dense_0/kernel", "Dense_1/kernel"]


def test_selector_matching_nothing_raises_naming_selector_and_listing_paths():
    with pytest.raises(ValueError) as err:
        select(_params(), "Conv_0/kernel", what="prune.select")
    message = str(err.value)
    assert "prune.select" in message
    assert "'Conv_0/kernel'" in message
    for path in leaf_paths(_params()):
        assert path in message


def test_predicate_matching_nothing_raises_naming_the_function():
    def never(path, leaf):
        return False

    with pytest.raises(ValueError, match="never matches no parameter"):
        selected_paths(_params(), never)


def test_invalid_regex_raises_value_error():
    with pytest.raises(ValueError, match="not a valid regular expression"):
        select(_params(), "Dense_(0")


def test_empty_selector_list_raises_value_error():
    with pytest.raises(ValueError, match="empty selector"):
        select(_params(), [])


def test_match_rules_first_matching_rule_wins():
    rules = [(".*kernel", 4), ("Dense_0/.*", 8), (".*", 32)]
    bits = match_rules(_params(), rules)
    assert bits == {
        "Dense_0": {"bias": 8, "kernel": 4, "kernel_scale": 8},
        "Dense_1": {"bias": 32, "kernel": 4},
    }


def test_match_rules_leaf_matched_by_no_rule_raises_naming_the_leaf():
    with pytest.raises(ValueError) as err:
        match_rules(_params(), [(".*kernel", 4), (".*bias", 32)], what="bits")
    message = str(err.value)
    assert message.startswith("bits:")
    assert "Dense_0/kernel_scale" in message
    assert "Dense_0/kernel," not in message  # matched leaves are not reported


def test_match_rules_unused_rule_raises_unless_allowed():
    rules = [("Dense_0/.*", 8), ("Conv_0/.*", 4), (".*", 32)]
    with pytest.raises(ValueError, match="Conv_0/.*match no parameter"):
        match_rules(_params(), rules)
    values = match_rules(_params(), rules, allow_unused=True)
    assert values["Dense_0"]["kernel"] == 8 and values["Dense_1"]["kernel"] == 32


def test_match_rules_invalid_regex_raises_value_error():
    with pytest.raises(ValueError, match="not a valid regular expression"):
        match_rules(_params(), [("[", 1)])
