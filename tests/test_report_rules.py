"""The separation rule of DESIGN.md, applied by the report builder itself (common.py).

Two arms are separated when their means differ by more than twice the
standard error of the difference, 2·sqrt(s1²/n1 + s2²/n2); with fewer than
3 seeds on either side a margin under a point (0.02 nats) is not called. Hand-computed
cases of the rule, then the builder: arms the seeds do not separate are never
printed as an ordering.
"""

from __future__ import annotations

import math

import pytest

from experiments.report import common
from tests.test_build_paper import (build, cells, make_pruned, make_result, pruning_section,
                                    table_row, write)


# --------------------------------------------------------------------------
# compare: two arms.


def test_separated_over_seeds_hand_computed():
    # a: 90, 91, 92 -> 91 ± 1; b: 89, 89.5, 90 -> 89.5 ± 0.5.
    # SE = sqrt(1/3 + 0.25/3) = 0.6455, twice 1.291 < 1.5: separated, a above b.
    c = common.compare([90.0, 91.0, 92.0], [89.0, 89.5, 90.0])
    assert c.se == pytest.approx(math.sqrt(1 / 3 + 0.25 / 3))
    assert c.difference == pytest.approx(1.5)
    assert c.separated and c.sign == 1 and not c.few_seeds
    assert c.text == ">" and c.verdict("better", "worse") == "better"
    assert common.compare([89.0, 89.5, 90.0], [90.0, 91.0, 92.0]).text == "<"


def test_not_separated_over_seeds_hand_computed():
    # b: 89.5, 90, 90.5 -> 90 ± 0.5: a - b = 1.0 < 1.291.
    c = common.compare([90.0, 91.0, 92.0], [89.5, 90.0, 90.5])
    assert not c.separated and c.sign == 0
    assert c.text == "≈ (not separated)"
    assert c.verdict("better", "worse") == "≈ (not separated)"
    assert c.brief("better", "worse") == "≈, not separated"


def test_a_difference_of_exactly_twice_the_standard_error_is_not_separated():
    # a: 0, 3, 3 -> 2 ± sqrt(3); b: 0, 0, 0 -> 0 ± 0. SE = sqrt(3/3 + 0) = 1: 2.0 is not > 2.0.
    assert not common.compare([0.0, 3.0, 3.0], [0.0, 0.0, 0.0]).separated
    assert common.compare([0.0, 3.0, 3.0], [-0.01, -0.01, -0.01]).separated
    # No spread on either side: over 3 seeds any difference separates, none does not.
    assert common.compare([90.0] * 3, [89.99] * 3).separated
    assert not common.compare([90.0] * 3, [90.0] * 3).separated


@pytest.mark.parametrize("a, b, unit, separated, qualifier", [
    ([90.0], [89.2], "points", False, "(one seed: not separated; needs 3 seeds)"),
    ([90.0], [89.0], "points", True, "(one seed)"),               # a margin of a point: called
    ([90.0], [88.5, 89.0, 89.5], "points", True, "(one seed)"),  # one seed on one side suffices
    ([90.0], [89.5, 89.6, 89.4], "points", False, "(one seed: not separated; needs 3 seeds)"),
    ([1.50], [1.49], "nats", False, "(one seed: not separated; needs 3 seeds)"),
    ([1.50], [1.47], "nats", True, "(one seed)"),                 # 0.03 >= 0.02 nats
])
def test_one_seed_calls_a_margin_of_a_point_or_002_nats_only(a, b, unit, separated, qualifier):
    c = common.compare(a, b, unit)
    assert c.few_seeds and c.se is None
    assert c.separated is separated and c.qualifier == qualifier


@pytest.mark.parametrize("a, b, unit, separated, qualifier", [
    # 0.52 points, SE = sqrt(0.0002/2 + 0.0081/3) = 0.053: 2 SE would separate it, but a margin
    # under a point stands on 3 seeds (DESIGN.md), and a second seed's std is no substitute.
    ([92.06, 92.04], [91.47, 91.63, 91.50], "points", False, "(2 seeds: not separated; needs 3 seeds)"),
    # 1.5 points, SE = sqrt(0.02/2 + 0.02/2) = 0.141: a point or more and past 2 SE: called.
    ([91.6, 91.4], [90.0, 90.2], "points", True, "(2 seeds)"),
    # 1.5 points but SE = sqrt(2/2 + 0.25/3) = 1.04, twice 2.08: two seeds too spread to call it.
    ([92.5, 90.5], [89.5, 90.0, 90.5], "points", False, "(2 seeds: not separated; needs 3 seeds)"),
    # 0.015 nats, SE = sqrt(0.00005/2 + 0) = 0.005: past 2 SE, under 0.02 nats: not called.
    ([1.48, 1.49], [1.47, 1.47, 1.47], "nats", False, "(2 seeds: not separated; needs 3 seeds)"),
])
def test_two_seeds_call_only_what_one_seed_would_and_2_se_allows(a, b, unit, separated, qualifier):
    c = common.compare(a, b, unit)
    assert c.few_seeds and c.fewest_seeds == 2 and c.se is not None
    assert c.separated is separated and c.qualifier == qualifier


def test_compare_needs_numbers_and_a_known_unit():
    assert common.compare([], [1.0]) is None
    assert common.compare([None], [1.0]) is None
    with pytest.raises(ValueError, match="unit"):
        common.compare([1.0], [2.0], "percent")


def test_verdict_words_and_marks():
    c = common.compare([1.60], [1.50], "nats")
    assert c.verdict("worse", "better") == "worse (one seed)"
    assert c.brief("worse", "better") == "worse, one seed"
    c = common.compare([1.51], [1.50], "nats")
    assert c.brief("worse", "better") == "≈, one seed: not separated, needs 3 seeds"
    # A dirty run's numbers keep their mark through the comparison's difference.
    c = common.compare([common.Unrecoverable(91.0)], [89.0])
    assert f"{c.difference:+.2f}" == "+2.00†"


# --------------------------------------------------------------------------
# ordering: several arms.


def test_ordering_joins_unseparated_neighbours_with_approx():
    arms = [("small-dense", [89.06, 89.23, 89.38]), ("gradual", [89.73, 89.63, 89.93]),
            ("one-shot", [89.85, 89.81, 89.91])]
    assert common.ordering(arms) == "one-shot ≈ gradual > small-dense"
    assert common.ordering([("FP", [91.9, 91.8, 92.0]), ("TWN", [91.2, 91.3, 91.1]),
                            ("BWN", [91.15])]) == (
        "FP > TWN ≈ BWN (one seed, needs 3 seeds: TWN ≈ BWN)")
    # Pairs resting on one seed and on two are named apart.
    assert common.ordering([("FitNet", [92.06, 92.04]), ("alone", [91.47, 91.63, 91.50]),
                            ("KD", [91.51]), ("AT", [89.0])]) == (
        "FitNet ≈ alone ≈ KD > AT (2 seeds, needs 3 seeds: FitNet ≈ alone; one seed, needs 3 seeds: "
        "alone ≈ KD; one seed: KD > AT)")
    assert common.ordering([("a", [1.0]), ("b", [])]) == common.MISSING
    # ≈ is not transitive: the Transformer students' val losses (nats), where the ends of the chain
    # are 0.021 apart against 2 SE = 0.014, while each neighbour pair is within its 2 SE.
    chain = [("staged", [1.5624, 1.5570, 1.5549]), ("alone", [1.5478, 1.5563, 1.5368]),
             ("logits", [1.5424, 1.5449, 1.5233])]
    assert common.ordering(chain, unit="nats") == (
        "staged ≈ alone ≈ logits (separated beyond neighbours: staged > logits)")
    assert common.ordering(chain[:2] + [("far", [1.40, 1.41, 1.39])], unit="nats") == "staged ≈ alone > far"


# --------------------------------------------------------------------------
# within: a "within N" claim.


@pytest.mark.parametrize("values, reference, bound, outcome", [
    # drop 0.10, SE = sqrt(0.01/3 + 0.01/3) = 0.0816: 0.10 + 0.163 = 0.263 <= 0.3: holds.
    ([89.9, 90.0, 89.8], [90.0, 90.1, 89.9], 0.3, "holds"),
    # drop 0.50: 0.50 - 0.163 = 0.337 > 0.3: fails.
    ([89.5, 89.6, 89.4], [90.0, 90.1, 89.9], 0.3, "fails"),
    # drop 0.25: 0.087 to 0.413 straddles 0.3: not separated from the bound.
    ([89.75, 89.85, 89.65], [90.0, 90.1, 89.9], 0.3, common.NOT_SEPARATED),
    # A gain is within: its whole interval is below the bound.
    ([90.5, 90.6, 90.4], [90.0, 90.1, 89.9], 0.3, "holds"),
    # One seed: the distance from the bound decides (0.4 from it: open; 1.3: called).
    ([89.9], [90.0], 0.5, common.NOT_SEPARATED),
    ([91.0], [90.0], 0.3, "holds"),
    ([88.0], [90.0], 0.3, "fails"),
    # Two seeds: 2 SE would call a drop 0.2 from the bound (0.3 ± 0.057 vs 0.5), but it is under
    # a point from it; 1.7 from it, the interval decides (drop 2.2 ± 0.057 > 0.5: fails).
    ([89.7, 89.7], [90.0, 89.9, 90.1], 0.5, common.NOT_SEPARATED),
    ([87.8, 87.8], [90.0, 89.9, 90.1], 0.5, "fails"),
])
def test_within_hand_computed(values, reference, bound, outcome):
    check = common.within(values, reference, bound)
    assert check.outcome == outcome


def test_within_texts_for_accuracy_and_loss():
    check = common.within([89.9, 90.0, 89.8], [90.0, 90.1, 89.9], 0.3)
    assert check.text() == "within 0.3 points (drop 0.10 ± 0.16)"
    check = common.within([89.9], [90.0], 0.5)
    assert check.text() == ("one seed: not separated from the 0.5-point bound "
                            "(drop 0.10, 0.40 from it; needs 3 seeds)")
    check = common.within([89.7, 89.7], [90.0, 89.9, 90.1], 0.5)
    assert check.text() == ("2 seeds: not separated from the 0.5-point bound "
                            "(drop 0.30 ± 0.12, 0.20 from it; needs 3 seeds)")
    # A loss: lower is better, the shortfall is the rise. 1.52 ± 0.01 against 1.50 (no
    # spread): SE = sqrt(0.0001 / 3) = 0.0058, twice 0.012; 0.020 + 0.012 <= 0.05.
    check = common.within([1.52, 1.53, 1.51], [1.50, 1.50, 1.50], 0.05, unit="nats",
                          higher_is_better=False)
    assert check.holds
    assert check.text("rise", "fall") == "within 0.050 nats (rise 0.020 ± 0.012)"
    assert common.within([], [1.0], 0.1) is None


# --------------------------------------------------------------------------
# compare_repeats: timings by their repetitions' ranges.


def test_timings_differ_only_when_the_repetitions_ranges_do_not_overlap():
    # LeNet-300-100 at batch 1 (structured_latency_lenet300): neurons_25's median is 0.86×
    # the dense speed, but its repetitions (0.035-0.060 ms) overlap the dense ones
    # (0.040-0.064 ms): no difference.
    dense = [0.0570, 0.0423, 0.0496, 0.0395, 0.0631, 0.0399, 0.0641]
    neurons = [0.0352, 0.0578, 0.0450, 0.0594, 0.0598, 0.0597, 0.0526]
    c = common.compare_repeats(neurons, dense)
    assert c.sign == 0 and c.verdict() == common.NO_DIFFERENCE
    assert common.compare_repeats([2.0, 2.1], [1.0, 1.9]).verdict() == "slower"
    assert common.compare_repeats([0.5, 0.9], [1.0, 1.9]).verdict() == "faster"
    assert common.compare_repeats([1.0], [2.0]) is None  # one repetition has no range


# --------------------------------------------------------------------------
# The builder: what it prints between two arms.

ORDERING_MARKS = (">", "<", "beats", "better", "worse", "yes", "faster", "slower")


def zhu_tree(tmp_path, small_dense: list[float]):
    results = tmp_path / "results"
    write(results, "baseline_lenet300", make_result(0.90))
    # gradual 89.7 ± 0.2 over three seeds.
    for seed, (grad, small) in enumerate(zip([0.897, 0.899, 0.895], small_dense)):
        write(results, f"zhu2017_lenet300_gradual_50/seed_{seed}",
              make_pruned(grad, weights_nonzero=133_100, params_nonzero=133_510))
        write(results, f"zhu2017_lenet300_smalldense_50/seed_{seed}",
              make_result(small, params=133_600))
    return pruning_section(build(results, tmp_path / "paper"))


def test_arms_the_seeds_do_not_separate_are_never_ordered(tmp_path):
    # small-dense 89.6 ± 0.2: 0.10 below gradual, 2·SE = 2·sqrt(0.04/3 + 0.04/3) = 0.33.
    section = zhu_tree(tmp_path, [0.896, 0.898, 0.894])
    row = cells(table_row(section, "50"))
    verdicts = row[6:]
    assert verdicts == ["gradual ≈ small-dense", "not separated (+0.10 points)"]
    assert not any(mark in v for v in verdicts for mark in ORDERING_MARKS)
    assert "not separated" in " ".join(verdicts)


def test_arms_the_seeds_separate_are_ordered(tmp_path):
    # small-dense 88.0 ± 0.2: 1.70 below gradual, far beyond 0.33.
    section = zhu_tree(tmp_path, [0.880, 0.882, 0.878])
    row = cells(table_row(section, "50"))
    assert row[6:] == ["gradual > small-dense", "yes (+1.70 points)"]


def test_a_structured_finding_does_not_order_unseparated_kinds(tmp_path):
    results = tmp_path / "results"
    for seed, acc in enumerate([0.90, 0.901, 0.899]):
        write(results, f"baseline_lenet300/seed_{seed}", make_result(acc))
    prefix = "ablation_structured_lenet300_"
    # 25 %: three seeds each, neurons 89.5 ± 0.2 and unstructured 89.6 ± 0.2: not separated.
    for seed, (neurons, unstructured) in enumerate([(0.895, 0.896), (0.897, 0.898),
                                                    (0.893, 0.894)]):
        write(results, f"{prefix}neurons_25/seed_{seed}", make_pruned(neurons))
        write(results, f"{prefix}unstructured_25/seed_{seed}", make_pruned(unstructured))
    text = pruning_section(build(results, tmp_path / "paper")).split("Finding: ", 1)[1]
    assert text.startswith("LeNet-300-100: no latency for both kinds")
    assert ("Neither kind keeps more accuracy at equal nonzero weights: not separated at "
            "25 %.") in text
    assert "keeps more accuracy at equal nonzero weights, at" not in text
    assert "the kind that keeps accuracy" not in text


def test_a_within_claim_on_unseparated_seeds_is_printed_as_not_separated(tmp_path):
    results = tmp_path / "results"
    # Dense 91 ± 1 over three seeds, TWN 90.5 ± 0.5 over three: drop 0.50 ± 1.29 straddles
    # the 1.0-point bound, so the claim is neither held nor failed.
    for seed, (fp, twn) in enumerate([(0.90, 0.900), (0.91, 0.905), (0.92, 0.910)]):
        write(results, f"baseline_lenet5/seed_{seed}", make_result(fp, model="lenet5"))
        write(results, f"li2016_twn_lenet5_twn/seed_{seed}", make_result(twn, model="lenet5"))
    report = build(results, tmp_path / "paper")
    row = cells(table_row(report, "TWN (ternary, 2-bit export)"))
    assert row[-1] == "not separated from the 1.0-point bound (drop 0.50 ± 1.29)"
    assert "ours, by mean test accuracy on Fashion-MNIST and ordered only where separated " \
           "(≈: not separated): FP ≈ TWN." in report


# --------------------------------------------------------------------------
# gap_closed: an arm against the point `target` of the way from one arm to another.


def test_gap_closed_hand_computed():
    # student 86, 87, 88 (87 ± 1); teacher 89, 90, 91 (90 ± 1); distilled 88.8, 89, 89.2 (89 ± 0.2).
    # Closed (89 - 87) / 3 = 2/3; the half-way mark 88.5, margin 0.5;
    # SE = sqrt(0.04/3 + 0.25/3 + 0.25/3) = 0.4243, twice 0.849 > 0.5: not separated.
    check = common.gap_closed([88.8, 89.0, 89.2], [86.0, 87.0, 88.0], [89.0, 90.0, 91.0], 0.5)
    assert check.closed == pytest.approx(2 / 3)
    assert check.margin == pytest.approx(0.5)
    assert check.se == pytest.approx(math.sqrt(0.04 / 3 + 0.25 / 3 + 0.25 / 3))
    assert check.outcome == common.NOT_SEPARATED
    assert check.text() == ("closes 67 % of the gap (at least 50 %: not separated; 0.50 ± 0.85 points past "
                            "the 50 % mark)")
    # Tight seeds separate it: student 86.9-87.1, teacher 89.9-90.1 (std 0.1 each).
    tight = common.gap_closed([88.8, 89.0, 89.2], [86.9, 87.0, 87.1], [89.9, 90.0, 90.1], 0.5)
    assert tight.outcome == "holds" and tight.holds
    short = common.gap_closed([87.4, 87.5, 87.6], [86.9, 87.0, 87.1], [89.9, 90.0, 90.1], 0.5)
    assert short.outcome == "fails" and short.text().endswith("1.00 ± 0.14 points short of the 50 % mark)")


def test_gap_closed_with_under_3_seeds_calls_only_a_point_from_the_mark():
    assert common.gap_closed([89.0], [87.0], [90.0], 0.5).text() == (
        "closes 67 % of the gap (at least 50 %: one seed: not separated; needs 3 seeds; 0.50 points past the "
        "50 % mark)")
    assert common.gap_closed([89.6], [87.0], [90.0], 0.5).text() == (
        "closes 87 % of the gap (at least 50 %: holds, one seed; 1.10 points past the 50 % mark)")
    # Two seeds per arm (s² = 0.02 each): SE = sqrt(0.01 + 0.0025 + 0.0025) = 0.122; 2 SE alone
    # would call the margin of 0.50, but it is under a point.
    assert common.gap_closed([88.9, 89.1], [86.9, 87.1], [89.9, 90.1], 0.5).text() == (
        "closes 67 % of the gap (at least 50 %: 2 seeds: not separated; needs 3 seeds; 0.50 ± 0.24 points past "
        "the 50 % mark)")
    assert common.gap_closed([89.0], [87.0], [87.0], 0.5) is None  # no gap to close
    assert common.gap_closed([], [87.0], [90.0], 0.5) is None
