"""Shared helpers of the report builder: every family module imports these.

Loading (`load_results`, `load_published`, `read_json`, `ResultsError`),
seeds (`split_seed`, `group_seeds`: `NAME/seed_K` and `NAME_seedK` share the
group `NAME`; `mean_std`, `format_stat`: mean ± sample standard deviation,
ddof=1), Markdown tables, citations (`References`, `format_published`),
figures (`save_figure`, `accuracy_line`, `finish_line_figure`), what every
part sees (`ReportInputs`), and the small column/mean/format helpers that
more than one family uses. This module imports no family module.

Numbers whose code cannot be recovered are marked here, in one place: a run
whose results.json names a `-dirty` commit (`versions.git_commit`, written
from a tree with uncommitted changes) has every number outside `config` and
`versions` read as an `Unrecoverable` float (`mark_unrecoverable`, applied by
`ReportInputs` to every result a part sees). Arithmetic keeps the mark and
formatting prints it (UNRECOVERABLE_MARK after the number), so a mean, a
difference or a ratio computed from such a run is marked in whatever cell
prints it, by the families' own format strings; `format_stat` and its kin
print one mark after a `mean ± std`. `unrecoverable_note` is the footnote the
report prints once, and `save_figure` drops the mark from figures.

Every verdict the report prints (an ordering, "better", "within N points",
"faster") is made here, in one place, by the separation rule of DESIGN.md:
`compare` (two arms), `ordering` (several arms), `within` (a "within N
points" claim) and `compare_repeats` (timings). A family module never orders
two numbers by itself. The rule, precisely:

Two arms a and b (lists of per-seed values of one measure, n_a and n_b
seeds) are *separated* when their means differ by more than twice the
standard error of the difference:

    |mean_a - mean_b| > 2 * SE,   SE = sqrt(s_a^2 / n_a + s_b^2 / n_b)

with s the sample standard deviation (ddof = 1). DESIGN.md asks for 3 seeds
(MIN_SEEDS) wherever a margin is under ONE_SEED_MARGIN[unit] (1 point of
accuracy or error, 0.02 nats of loss). So with fewer than 3 seeds on either
side a margin under that cannot be called ("one seed: not separated; needs
3 seeds", or "2 seeds: ..."), and a margin of at least that is stated,
marked "(one seed)" or "(2 seeds)", when it also clears 2 SE where there is
an SE (two seeds each have a standard deviation, one seed has none). What
is not separated is printed as "≈ (not separated)", never as an ordering.

A "within N" claim (a falls short of b by at most N: a drop in accuracy,
a rise in loss) is judged on the shortfall d = mean_b - mean_a (accuracy)
or mean_a - mean_b (loss) and its interval d ± 2 SE:
  holds          when the whole interval lies within the bound: d + 2 SE <= N;
  fails          when the whole interval lies beyond it:        d - 2 SE >  N;
  not separated  from the N bound otherwise (the interval straddles N).
A gain (d < 0) is within. With fewer than 3 seeds on either side the
margin is the distance |d - N| from the bound: under ONE_SEED_MARGIN the
claim is not separated from the bound (needs 3 seeds); otherwise the
interval decides where there is an SE, and d <= N (holds) or d > N (fails)
where there is none, marked "(one seed)" or "(2 seeds)". `gap_closed`
treats its margin from the mark the same way.

Timings (latency, step time) have repetitions, not seeds: two are different
only when their repetitions' ranges do not overlap (every repetition of one
is faster than every repetition of the other); a difference inside the
repetitions' range is "no difference" (`compare_repeats`); with fewer than
two repetitions on a side there is no range, and nothing is judged.

Boundaries, up to CLAIM_EPS for floating point: a difference of exactly 2 SE
is not separated; a one-seed margin of exactly one point (0.02 nats) is
called; an interval whose upper end is exactly N holds.

`language_model_shapes` gives a language-model run's parameter shapes (by
jax.eval_shape of its recorded model config), for counts results.json does
not break down by parameter path; `kept_text` prints `kept / total (%)`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import statistics
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

MISSING = "—"
FIGURES_DIR = "figures"
REPORT_FILE = "README.md"
RESULTS_FILE = "results.json"
# The contract in DESIGN.md: every run writes these sections (more is fine).
REQUIRED_SECTIONS = ("config", "metrics", "compression", "timing", "versions")

Results = Mapping[str, Mapping[str, Any]]
Group = list[tuple[str, Mapping[str, Any]]]
CLAIM_EPS = 1e-9  # 0.9 - 0.897 is 0.30000000000000004 in floating point
REPRODUCE = "python -m experiments.reproduce"


class ResultsError(ValueError):
    """A results.json or published.json that does not follow the contract."""


# --------------------------------------------------------------------------
# Loading.


def read_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResultsError(f"{path}: cannot read JSON: {e}") from e


def _check_result(path: Path, data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ResultsError(f"{path}: top level must be a JSON object, "
                           f"got {type(data).__name__}")
    for key in REQUIRED_SECTIONS:
        if not isinstance(data.get(key), dict):
            raise ResultsError(f"{path}: missing or non-object section {key!r} "
                               f"(required: {', '.join(REQUIRED_SECTIONS)})")
    return data


def load_results(results_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Reads every results.json below `results_dir`, keyed by its run name.

    The run name is the folder path relative to `results_dir`, e.g.
    `baseline_lenet5` or `baseline_lenet5/seed_1`. A missing directory reads as
    no results; a file that is not valid JSON or lacks a contract section
    raises `ResultsError` naming its path (nothing is skipped silently).
    """
    root = Path(results_dir)
    if not root.is_dir():
        return {}
    results: dict[str, dict[str, Any]] = {}
    for path in sorted(root.rglob(RESULTS_FILE)):
        rel = path.parent.relative_to(root)
        if rel == Path("."):
            raise ResultsError(f"{path}: results must live in {root}/NAME/, "
                               "the folder name is the run's name")
        results[rel.as_posix()] = _check_result(path, read_json(path))
    return dict(sorted(results.items()))


def load_published(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Reads the published-numbers file: a list of entries with unique ids.

    Every entry needs an `id`, a non-empty `citation` and a numeric `value`;
    anything else raises `ResultsError` naming the file and the entry.
    """
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, list):
        raise ResultsError(f"{path}: expected a JSON list of entries")
    seen: set[str] = set()
    for i, entry in enumerate(data):
        where = f"{path}: entry {i}"
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            raise ResultsError(f"{where}: needs a string 'id'")
        where = f"{path}: entry {entry['id']!r}"
        if entry["id"] in seen:
            raise ResultsError(f"{where}: duplicate id")
        seen.add(entry["id"])
        if not isinstance(entry.get("citation"), str) or not entry["citation"].strip():
            raise ResultsError(f"{where}: needs a non-empty 'citation'")
        if not is_number(entry.get("value")):
            raise ResultsError(f"{where}: 'value' must be a number")
    return data


# --------------------------------------------------------------------------
# Numbers whose code cannot be recovered: runs from a tree with uncommitted changes.

UNRECOVERABLE_MARK = "†"
DIRTY_SUFFIX = "-dirty"  # experiments/train.py versions(): the tree had uncommitted changes
# Sections that say what a run was asked to do, not what it measured: never marked.
UNMARKED_SECTIONS = ("config", "versions", "command")


def run_commit(result: Mapping[str, Any]) -> str | None:
    """The run's `versions.git_commit`, None when it records none."""
    commit = get_path(result, "versions.git_commit")
    return commit if isinstance(commit, str) else None


def is_unrecoverable_run(result: Mapping[str, Any]) -> bool:
    """Whether the run's commit is `-dirty`: its code cannot be recovered exactly."""
    commit = run_commit(result)
    return commit is not None and commit.endswith(DIRTY_SUFFIX)


def _integral(x: Any) -> bool:
    return (x.integral if isinstance(x, Unrecoverable)
            else isinstance(x, int) and not isinstance(x, bool))


class Unrecoverable(float):
    """A number from (or computed from) a run whose code cannot be recovered.

    It is the float it holds for comparisons, hashing, sums and plotting;
    arithmetic with it (either side of + - * / // % **, unary - + abs,
    round(x, n)) returns an Unrecoverable again, and formatting it
    (f-strings, str.format, str) appends UNRECOVERABLE_MARK; round(x) is a
    plain int, fit to index with. `integral` keeps a count printing as an
    integer (`f"{x}"` is `266610†`, not `266610.0†`). float(x) is the plain
    number, without the mark.
    """
    __slots__ = ("integral",)

    def __new__(cls, value: Any, integral: bool | None = None) -> "Unrecoverable":
        self = super().__new__(cls, value)
        self.integral = _integral(value) if integral is None else integral
        return self

    def __format__(self, spec: str) -> str:
        kind = spec[-1:] if spec[-1:].isalpha() or spec[-1:] == "%" else ""
        if self.integral and self.is_integer() and kind in ("", "d", "n"):
            text = format(int(self), spec)
        elif spec:
            text = float.__format__(self, spec)
        else:  # float.__format__ with no spec is str(self), which is this method
            text = float.__repr__(self)
        return text + UNRECOVERABLE_MARK

    def __str__(self) -> str:
        return format(self, "")

    def __repr__(self) -> str:
        return f"Unrecoverable({float.__repr__(self)})"


def _keep_mark(name: str, integral_kept: bool) -> None:
    plain = getattr(float, name)

    def method(self: Unrecoverable, *args: Any) -> Any:
        result = plain(self, *args)
        if isinstance(result, float):  # NotImplemented, ints (round(x)) and tuples pass through
            integral = integral_kept and self.integral and all(_integral(a) for a in args)
            return Unrecoverable(result, integral)
        return result

    method.__name__ = name
    setattr(Unrecoverable, name, method)


for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__",
              "__neg__", "__pos__", "__abs__"):
    _keep_mark(_name, integral_kept=True)
for _name in ("__truediv__", "__rtruediv__", "__floordiv__", "__rfloordiv__", "__mod__",
              "__rmod__", "__pow__", "__rpow__", "__round__"):
    _keep_mark(_name, integral_kept=False)


def is_unrecoverable(x: Any) -> bool:
    """Whether `x` is a number that carries the mark."""
    return isinstance(x, Unrecoverable)


def _marked_numbers(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {k: _marked_numbers(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_marked_numbers(v) for v in node]
    return Unrecoverable(node) if is_number(node) else node


def mark_unrecoverable(result: Mapping[str, Any]) -> Mapping[str, Any]:
    """The run with every measured number Unrecoverable when its commit is `-dirty`, else itself.

    Sections in UNMARKED_SECTIONS (the config, the versions, the command)
    stay as they are: they say what was asked, which the results.json records.
    """
    if not is_unrecoverable_run(result):
        return result
    return {k: v if k in UNMARKED_SECTIONS else _marked_numbers(v) for k, v in result.items()}


def with_mark(text: str, marked: bool) -> str:
    """`text` with one UNRECOVERABLE_MARK at its end when `marked` (or when it holds any)."""
    if not marked and UNRECOVERABLE_MARK not in text:
        return text
    return text.replace(UNRECOVERABLE_MARK, "") + UNRECOVERABLE_MARK


def unrecoverable_note(results: Results) -> str:
    """The report's footnote on UNRECOVERABLE_MARK, empty when no run is from a dirty tree."""
    commits: dict[str, int] = {}
    for result in results.values():
        if is_unrecoverable_run(result):
            commit = run_commit(result) or ""
            commits[commit] = commits.get(commit, 0) + 1
    if not commits:
        return ""
    runs = sum(commits.values())
    listed = ", ".join(f"`{c.removesuffix(DIRTY_SUFFIX)[:7]}{DIRTY_SUFFIX}` "
                       f"({n} run{'s' if n > 1 else ''})"
                       for c, n in sorted(commits.items(), key=lambda t: (-t[1], t[0])))
    return (f"{UNRECOVERABLE_MARK} after a number: it comes from, or is computed from, a run "
            f"whose results.json names a tree with uncommitted changes (`versions.git_commit` "
            f"ending in `{DIRTY_SUFFIX}`); its code cannot be recovered exactly; to be re-run "
            f"from a committed tree. That is {runs} of {len(results)} runs, from commit"
            f"{'s' if len(commits) > 1 else ''} {listed}. Figures carry no mark.")


# --------------------------------------------------------------------------
# Seeds, formatting, tables and citations.


def is_number(x: Any) -> bool:
    """True for int/float values (bool excluded: True is not a measurement)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def get_path(data: Mapping[str, Any], dotted: str) -> Any:
    """`get_path(r, "config.model.name")`: nested .get, None when absent."""
    node: Any = data
    for key in dotted.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


_SEED_RE = re.compile(r"^(?P<base>.+?)(?:/seed_(?P<a>\d+)|_seed(?P<b>\d+))$")


def split_seed(name: str) -> tuple[str, int | None]:
    """`a/seed_2` and `a_seed2` -> ("a", 2); a name without a seed -> (name, None)."""
    m = _SEED_RE.match(name)
    if not m:
        return name, None
    return m.group("base"), int(m.group("a") or m.group("b"))


def group_seeds(results: Results) -> dict[str, Group]:
    """Groups runs that differ only by seed, sorted by group then seed.

    Returns {group name: [(run name, results), ...]}; a run without a seed
    suffix forms (or joins) the group of its own name.
    """
    groups: dict[str, list[tuple[int, str, Mapping[str, Any]]]] = {}
    for name, result in results.items():
        base, seed = split_seed(name)
        # Runs without a seed sort first; -1 never collides with a real seed.
        groups.setdefault(base, []).append((-1 if seed is None else seed, name, result))
    return {base: [(n, r) for _, n, r in sorted(members, key=lambda t: (t[0], t[1]))]
            for base, members in sorted(groups.items())}


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof=1); std is None for one value."""
    if not values:
        raise ValueError("mean_std of no values")
    marked = any(map(is_unrecoverable, values))
    values = [float(v) if is_unrecoverable(v) else v for v in values]
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else None
    if marked:
        return Unrecoverable(mean), (None if std is None else Unrecoverable(std))
    return mean, std


def format_stat(values: Iterable[Any], fmt: str = "{:.2f}", *,
                collapse_equal: bool = False) -> str:
    """Formats one value, or `mean ± std` over several; MISSING when none.

    Non-numbers (absent fields) are ignored. With `collapse_equal`, identical
    values print once: a parameter count repeated over seeds is not a spread.
    One UNRECOVERABLE_MARK follows when any value carries it.
    """
    numbers = [v for v in values if is_number(v)]
    xs = [float(v) for v in numbers]
    if not xs:
        return MISSING
    marked = any(map(is_unrecoverable, numbers))
    if len(xs) == 1 or (collapse_equal and all(x == xs[0] for x in xs)):
        return with_mark(fmt.format(xs[0]), marked)
    mean, std = mean_std(xs)
    return with_mark(f"{fmt.format(mean)} ± {fmt.format(std)}", marked)


def format_seconds(values: Iterable[Any]) -> str:
    """Wall time in s, min or h (unit chosen from the mean), mean ± std."""
    numbers = [v for v in values if is_number(v)]
    if not numbers:
        return MISSING
    mean = statistics.fmean([float(v) for v in numbers])
    scale, unit = (1.0, "s") if mean < 120 else (60.0, "min") if mean < 7200 else (3600.0, "h")
    return f"{format_stat([v / scale for v in numbers], '{:.1f}')} {unit}"


def format_wall_time(members: Group) -> str:
    """format_seconds of the runs' `timing.wall_s`, over the runs whose timing covers every step they trained.

    Before 3f32ecf an invocation stopped by Ctrl-C or SIGTERM kept its steps but not their time, so a resumed
    run's wall time counts only what came after it. Such runs are left out, and the text says how many runs
    remain ("(2 of 3 runs)"); where every run is short, their times show as a lower bound ("≥ ...").
    """
    short = [is_number(done) and is_number(total) and done < total for done, total in
             zip(column(members, "timing.steps_trained"), column(members, "config.train.num_steps"))]
    whole = [m for m, s in zip(members, short) if not s]
    if not whole:
        text = format_seconds(column(members, "timing.wall_s"))
        return text if text == MISSING else f"≥ {text}"
    text = format_seconds(column(whole, "timing.wall_s"))
    return f"{text} ({len(whole)} of {len(members)} runs)" if len(whole) < len(members) else text


def distinct_text(values: Iterable[Any]) -> str:
    """Distinct non-empty values joined in sorted order, MISSING when none."""
    texts = sorted({str(v) for v in values if v not in (None, "")})
    return ", ".join(texts) if texts else MISSING


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table; `|` inside cells is escaped."""
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ")
                                 for c in cells) + " |"
    return "\n".join([line(headers), line(["---"] * len(headers))]
                     + [line(r) for r in rows])


def short_cite(entry: Mapping[str, Any]) -> str:
    """`Han et al. 2015` from a published entry's `paper` field."""
    paper = entry.get("paper") or {}
    authors = [a.strip() for a in str(paper.get("authors", "")).split(",") if a.strip()]
    if not authors:
        return str(entry.get("id", MISSING))
    surname = authors[0].split()[-1]
    if len(authors) == 2:
        surname = f"{surname} & {authors[1].split()[-1]}"
    elif len(authors) > 2:
        surname = f"{surname} et al."
    year = paper.get("year")
    return f"{surname} {year}" if year else surname


def published_accuracy_percent(entry: Mapping[str, Any]) -> float | None:
    """A published entry as test accuracy in %, or None if it is not one.

    Accuracy is stored as a fraction (Fashion-MNIST README) or in %, error in %
    (Han et al.); converting here keeps published.json in the papers' own units.
    """
    metric, unit, value = entry.get("metric"), entry.get("unit"), entry.get("value")
    if not is_number(value):
        return None
    if metric in ("test_accuracy", "top1_accuracy"):
        return 100.0 * value if unit == "fraction" else float(value) if unit == "%" else None
    if metric == "test_error" and unit == "%":
        return 100.0 - value
    return None


def format_published(entry: Mapping[str, Any]) -> str:
    """`90.0 % accuracy` / `1.64 % error`, in the paper's own measure."""
    value, unit, metric = entry["value"], entry.get("unit", ""), entry.get("metric", "")
    if metric == "test_accuracy" and unit == "fraction":
        text = f"{100 * value:.1f} % accuracy"
    elif metric == "test_accuracy" and unit == "%":
        text = f"{value:g} % accuracy"
    elif metric == "test_error" and unit == "%":
        text = f"{value:.2f} % error"
    else:
        text = f"{value:g} {unit}".strip()
    return text if entry.get("checked", True) else f"{text} (unchecked)"


def published_text(inputs: "ReportInputs", refs: "References", *ids: str) -> str:
    """`Sun et al. 2024 [2]: dense 5.12 perplexity, ...`: the entries' labels and values, each paper cited once."""
    by_paper: dict[str, list[Mapping[str, Any]]] = {}
    for entry in (inputs.published_by_id(i) for i in ids):
        by_paper.setdefault(refs.cite(entry), []).append(entry)
    return "; ".join(f"{cite}: " + ", ".join(f"{e.get('label', e['setting'])} {format_published(e)}" for e in entries)
                     for cite, entries in by_paper.items())


class References:
    """Numbers citations in order of first use, for a section's reference list."""

    def __init__(self) -> None:
        self._order: list[Mapping[str, Any]] = []

    def cite(self, entry: Mapping[str, Any]) -> str:
        """Returns `Han et al. 2015 [n]`, numbering the citation on first use."""
        citations = [e["citation"] for e in self._order]
        if entry["citation"] not in citations:
            self._order.append(entry)
            citations.append(entry["citation"])
        return f"{short_cite(entry)} [{citations.index(entry['citation']) + 1}]"

    def markdown(self) -> str:
        """The numbered reference list, empty when nothing was cited."""
        return "\n".join(f"{i}. {e['citation']}" for i, e in enumerate(self._order, 1))


# --------------------------------------------------------------------------
# Figures.


def save_figure(fig: Figure, path: Path) -> None:
    """Writes a PNG through the Agg canvas with no version stamp, so reruns
    (and other matplotlib versions) produce byte-identical files.

    Figures carry no UNRECOVERABLE_MARK (the footnote that explains it is in
    the report's text): it is dropped from every text of the figure."""
    for text in fig.findobj(Text):
        content = text.get_text()
        if UNRECOVERABLE_MARK in content:
            text.set_text(content.replace(UNRECOVERABLE_MARK, ""))
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=120, metadata={"Software": None})


def accuracy_line(ax: Any, groups: Sequence[Group], style: tuple[str, str], label: str) -> bool:
    """Mean accuracy (± sample std where several seeds) of groups[i] at x = i, skipping empty ones.

    Returns whether anything was drawn.
    """
    points = [(i, mean_std(acc)) for i, members in enumerate(groups)
              if (acc := accuracy_percents(members))]
    if not points:
        return False
    errs = [std or 0.0 for _, (_, std) in points]
    colour, marker = style
    ax.errorbar([i for i, _ in points], [mean for _, (mean, _) in points],
                yerr=errs if any(errs) else None, color=colour, marker=marker, capsize=3, label=label)
    return True


def finish_line_figure(fig: Any, ax: Any, xlabel: str, ylabel: str, title: str, path: Path) -> None:
    """Labels, legend and grid of a line figure, then writes it (the pruning figures share this look)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


# --------------------------------------------------------------------------
# Verdicts: when two arms are separated (DESIGN.md); the rule is in the module docstring.

UNITS = ("points", "nats")
ONE_SEED_MARGIN = {"points": 1.0, "nats": 0.02}
NOT_SEPARATED = "not separated"
MIN_SEEDS = 3
NEEDS_SEEDS = f"needs {MIN_SEEDS} seeds"


def seeds_text(counts: Iterable[int]) -> str:
    """`one seed`, `2 seeds`, or `under 3 seeds` when the counts differ: what verdicts rest on."""
    distinct = set(counts)
    if len(distinct) != 1:
        return f"under {MIN_SEEDS} seeds"
    (n,) = distinct
    return "one seed" if n == 1 else f"{n} seeds"


def _unit_format(unit: str) -> str:
    return "{:.3f}" if unit == "nats" else "{:.2f}"


def _plain_numbers(values: Iterable[Any]) -> list[Any]:
    return [v for v in values if is_number(v)]


class _RestsOnSeeds:
    """What a verdict rests on, from its `fewest_seeds` (the fewest seeds of any arm it compares)."""
    fewest_seeds: int

    @property
    def few_seeds(self) -> bool:
        """Under MIN_SEEDS in an arm: a margin under ONE_SEED_MARGIN is not called."""
        return self.fewest_seeds < MIN_SEEDS

    @property
    def seeds(self) -> str:
        """`one seed`, `2 seeds`: what a few-seed verdict rests on."""
        return seeds_text([self.fewest_seeds])


@dataclasses.dataclass(frozen=True)
class Comparison(_RestsOnSeeds):
    """Arm a against arm b under the separation rule (see the section comment above)."""
    mean_a: float
    mean_b: float
    n_a: int
    n_b: int
    unit: str
    se: float | None  # standard error of the difference; None with one seed on either side
    separated: bool

    @property
    def difference(self) -> float:
        return self.mean_a - self.mean_b

    @property
    def fewest_seeds(self) -> int:
        return min(self.n_a, self.n_b)

    @property
    def sign(self) -> int:
        """+1: a above b, -1: a below b, 0: not separated."""
        if not self.separated:
            return 0
        return 1 if self.difference > 0 else -1

    @property
    def symbol(self) -> str:
        return {1: ">", -1: "<", 0: "≈"}[self.sign]

    @property
    def qualifier(self) -> str:
        """What the verdict rests on: '' (separated over 3 seeds), '(one seed)', '(2 seeds)',
        '(not separated)', '(one seed: not separated; needs 3 seeds)'."""
        if self.separated:
            return f"({self.seeds})" if self.few_seeds else ""
        return (f"({self.seeds}: {NOT_SEPARATED}; {NEEDS_SEEDS})" if self.few_seeds
                else f"({NOT_SEPARATED})")

    @property
    def text(self) -> str:
        """`>`, `< (one seed)`, `≈ (not separated)`: a against b."""
        return f"{self.symbol} {self.qualifier}".strip()

    def verdict(self, above: str, below: str) -> str:
        """`above` / `below` (a's side of b, e.g. "worse" / "better"), or `≈ (not separated)`."""
        if not self.separated:
            return f"≈ {self.qualifier}"
        word = above if self.sign > 0 else below
        return f"{word} {self.qualifier}".strip()

    def brief(self, above: str, below: str) -> str:
        """The verdict without brackets, to sit inside them: `worse, one seed`,
        `≈, not separated`, `≈, one seed: not separated, needs 3 seeds`."""
        if not self.separated:
            return (f"≈, {self.seeds}: {NOT_SEPARATED}, {NEEDS_SEEDS}" if self.few_seeds
                    else f"≈, {NOT_SEPARATED}")
        word = above if self.sign > 0 else below
        return f"{word}, {self.seeds}" if self.few_seeds else word


def compare(a_values: Iterable[Any], b_values: Iterable[Any], unit: str = "points"
            ) -> Comparison | None:
    """Arm a against arm b (per-seed values in `unit`: "points" or "nats"); None when either is empty."""
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, not {unit!r}")
    a, b = _plain_numbers(a_values), _plain_numbers(b_values)
    if not a or not b:
        return None
    (mean_a, std_a), (mean_b, std_b) = mean_std(a), mean_std(b)
    se = (None if std_a is None or std_b is None
          else math.sqrt(float(std_a) ** 2 / len(a) + float(std_b) ** 2 / len(b)))
    margin = abs(mean_a - mean_b)
    separated = (se is None or margin > 2.0 * se + CLAIM_EPS) and (
        min(len(a), len(b)) >= MIN_SEEDS or margin >= ONE_SEED_MARGIN[unit] - CLAIM_EPS)
    return Comparison(mean_a, mean_b, len(a), len(b), unit, se, separated)


def ordering(arms: Sequence[tuple[str, Iterable[Any]]], unit: str = "points") -> str:
    """`gradual > one-shot ≈ small-dense` by mean, each neighbour pair judged by `compare`.

    Arms without values are left out; MISSING when fewer than two remain.
    Neighbours that are not separated join with `≈`; a trailing note names the
    pairs that rest on fewer than 3 seeds: `FP > TWN ≈ BWN (one seed, needs 3 seeds:
    TWN ≈ BWN)`, `gradual > one-shot (one seed: gradual > one-shot)`, `2 seeds` likewise.
    Since `≈` is not transitive, arms of one `≈` chain that are separated are named:
    `a ≈ b ≈ c (separated beyond neighbours: a > c)`.
    """
    known = [(label, vals) for label, values in arms if (vals := _plain_numbers(values))]
    if len(known) < 2:
        return MISSING
    known.sort(key=lambda t: -float(statistics.fmean(map(float, t[1]))))
    text = known[0][0]
    open_pairs: dict[str, list[str]] = {}
    called_pairs: dict[str, list[str]] = {}
    chains = [[known[0]]]  # runs of arms joined by ≈
    for (prev_label, prev), (label, values) in zip(known, known[1:]):
        c = compare(prev, values, unit)
        assert c is not None
        symbol = ">" if c.separated else "≈"
        text += f" {symbol} {label}"
        if c.separated:
            chains.append([])
        chains[-1].append((label, values))
        if c.few_seeds:
            (called_pairs if c.separated else open_pairs).setdefault(c.seeds, []).append(
                f"{prev_label} {symbol} {label}")
    notes = ([f"{seeds}, {NEEDS_SEEDS}: {', '.join(pairs)}" for seeds, pairs in open_pairs.items()]
             + [f"{seeds}: {', '.join(pairs)}" for seeds, pairs in called_pairs.items()])
    apart = _separated_within_chains(chains, unit)
    if apart:
        notes.append(f"separated beyond neighbours: {', '.join(apart)}")
    return text + (f" ({'; '.join(notes)})" if notes else "")


def _separated_within_chains(chains: Sequence[Sequence[tuple[str, list]]], unit: str) -> list[str]:
    """`a > c` for each pair of arms two or more places apart in one `≈` chain that `compare` separates."""
    pairs = []
    for chain in chains:
        for i, (label_a, a) in enumerate(chain):
            for label_c, c_values in chain[i + 2:]:
                c = compare(a, c_values, unit)
                if c is not None and c.separated:
                    pairs.append(f"{label_a} > {label_c}" + (f" ({c.seeds})" if c.few_seeds else ""))
    return pairs


@dataclasses.dataclass(frozen=True)
class BoundCheck(_RestsOnSeeds):
    """Whether arm a falls short of arm b by at most `bound` (see the section comment above)."""
    shortfall: float  # b - a for accuracy, a - b for loss: positive is worse
    bound: float
    unit: str
    se: float | None
    outcome: str      # "holds", "fails" or NOT_SEPARATED
    fewest_seeds: int  # of either arm

    @property
    def holds(self) -> bool:
        return self.outcome == "holds"

    def _shortfall_text(self, worse: str, better: str) -> str:
        fmt = _unit_format(self.unit)
        word = worse if self.shortfall >= 0 else better
        text = f"{word} {fmt.format(abs(self.shortfall))}"
        if self.se is not None:
            text += f" ± {fmt.format(2.0 * self.se)}"
        return text

    def text(self, worse: str = "drop", better: str = "gain") -> str:
        """`within 1.0 points (drop 0.65 ± 0.23)`, `not within 0.3 points (drop 1.07 ± 0.23)`,
        `not separated from the 1.0-point bound (drop 0.81 ± 0.40)`, and with one seed
        `within 2.0 points (drop 0.73; one seed, 1.27 inside the bound)` or
        `one seed: not separated from the 1.0-point bound (drop 0.41, 0.59 from it; needs 3 seeds)`
        (with two, `2 seeds` and the drop's ± 2 SE)."""
        fmt = _unit_format(self.unit)
        number = ("{:.3f}" if self.unit == "nats" else "{:.1f}").format(self.bound)
        singular = self.unit[:-1]
        bound = f"{number} {singular if float(number) == 1 else self.unit}"
        the_bound = f"the {number}-{singular} bound"
        what = self._shortfall_text(worse, better)
        margin = fmt.format(abs(self.bound - self.shortfall))
        if self.few_seeds:
            if self.outcome == NOT_SEPARATED:
                return (f"{self.seeds}: {NOT_SEPARATED} from {the_bound} "
                        f"({what}, {margin} from it; {NEEDS_SEEDS})")
            where = "inside" if self.holds else "beyond"
            head = "within" if self.holds else "not within"
            return f"{head} {bound} ({what}; {self.seeds}, {margin} {where} the bound)"
        if self.outcome == NOT_SEPARATED:
            return f"{NOT_SEPARATED} from {the_bound} ({what})"
        return f"{'within' if self.holds else 'not within'} {bound} ({what})"


def within(values: Iterable[Any], reference: Iterable[Any], bound: float, unit: str = "points",
           higher_is_better: bool = True) -> BoundCheck | None:
    """Does arm `values` fall short of `reference` by at most `bound`? None when either is empty."""
    c = compare(values, reference, unit)
    if c is None:
        return None
    shortfall = -c.difference if higher_is_better else c.difference
    if c.few_seeds and abs(bound - shortfall) < ONE_SEED_MARGIN[unit] - CLAIM_EPS:
        outcome = NOT_SEPARATED
    elif c.se is None:
        outcome = "holds" if shortfall <= bound + CLAIM_EPS else "fails"
    elif shortfall + 2.0 * c.se <= bound + CLAIM_EPS:
        outcome = "holds"
    elif shortfall - 2.0 * c.se > bound + CLAIM_EPS:
        outcome = "fails"
    else:
        outcome = NOT_SEPARATED
    return BoundCheck(shortfall, bound, unit, c.se, outcome, c.fewest_seeds)


@dataclasses.dataclass(frozen=True)
class GapCheck(_RestsOnSeeds):
    """Whether an arm closes at least `target` of the gap from a `low` arm to a `high` arm."""
    closed: float     # (mean - mean_low) / (mean_high - mean_low)
    target: float
    margin: float     # mean - (mean_low + target (mean_high - mean_low)), in unit: positive is past the mark
    unit: str
    se: float | None  # of the margin; None with one seed in any arm
    outcome: str      # "holds", "fails" or NOT_SEPARATED
    fewest_seeds: int  # of any arm

    @property
    def holds(self) -> bool:
        return self.outcome == "holds"

    def text(self) -> str:
        """`closes 78 % of the gap (at least 50 %: holds; 1.20 ± 0.40 points past the 50 % mark)`."""
        fmt = _unit_format(self.unit)
        where = "past" if self.margin >= 0 else "short of"
        mark = f"{fmt.format(abs(self.margin))}" + (f" ± {fmt.format(2.0 * self.se)}" if self.se is not None else "")
        verdict = self.outcome if not self.few_seeds else (
            f"{self.seeds}: {NOT_SEPARATED}; {NEEDS_SEEDS}" if self.outcome == NOT_SEPARATED
            else f"{self.outcome}, {self.seeds}")
        return (f"closes {100 * self.closed:.0f} % of the gap (at least {100 * self.target:.0f} %: {verdict}; "
                f"{mark} {self.unit} {where} the {100 * self.target:.0f} % mark)")


def gap_closed(values: Iterable[Any], low: Iterable[Any], high: Iterable[Any], target: float,
               unit: str = "points") -> GapCheck | None:
    """Does arm `values` close at least `target` of the gap from `low` to `high` (higher is better)?

    The separation rule on the margin m = mean - (mean_low + target · (mean_high - mean_low)):
    with seeds on every arm, its standard error is sqrt(s²/n + (1-target)² s_low²/n_low +
    target² s_high²/n_high) and it holds where m > 2 SE, fails where m < -2 SE; with fewer than
    3 seeds anywhere it is called only a point (0.02 nats) or more from the mark (and, with two,
    past 2 SE too). None when an arm is empty or the gap is zero.
    """
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, not {unit!r}")
    arms = [_plain_numbers(v) for v in (values, low, high)]
    if not all(arms):
        return None
    stats = [mean_std(a) for a in arms]
    (mean, _), (mean_low, _), (mean_high, _) = stats
    gap = mean_high - mean_low
    if gap == 0:
        return None
    margin = mean - (mean_low + target * gap)
    weights = (1.0, 1.0 - target, target)
    se = (None if any(std is None for _, std in stats) else
          math.sqrt(sum((w * float(std)) ** 2 / len(a) for w, (_, std), a in zip(weights, stats, arms))))
    fewest = min(len(a) for a in arms)
    separated = (se is None or abs(margin) > 2.0 * se + CLAIM_EPS) and (
        fewest >= MIN_SEEDS or abs(margin) >= ONE_SEED_MARGIN[unit] - CLAIM_EPS)
    outcome = NOT_SEPARATED if not separated else ("holds" if margin > 0 else "fails")
    return GapCheck((mean - mean_low) / gap, target, margin, unit, se, outcome, fewest)


NO_DIFFERENCE = "no difference"


@dataclasses.dataclass(frozen=True)
class RepeatComparison:
    """Timing a against timing b by their repetitions' ranges: +1 every repetition of a
    above every one of b (a slower), -1 below (a faster), 0 the ranges overlap."""
    range_a: tuple[float, float]
    range_b: tuple[float, float]
    sign: int

    @property
    def separated(self) -> bool:
        return self.sign != 0

    def verdict(self, above: str = "slower", below: str = "faster") -> str:
        return {1: above, -1: below, 0: NO_DIFFERENCE}[self.sign]


def compare_repeats(a_values: Iterable[Any], b_values: Iterable[Any]) -> RepeatComparison | None:
    """Two timings (ms per repetition) by the ranges of their repetitions; None without
    two repetitions on each side (one repetition has no range to judge by)."""
    a, b = [float(v) for v in _plain_numbers(a_values)], [float(v) for v in _plain_numbers(b_values)]
    if len(a) < 2 or len(b) < 2:
        return None
    sign = 1 if min(a) > max(b) else -1 if max(a) < min(b) else 0
    return RepeatComparison((min(a), max(a)), (min(b), max(b)), sign)


def ratio_cell(row: Mapping[str, Any], variant: str, reference: str) -> str:
    """`1.03× (1.00–1.04; slower)`: a benchmark row's ratio of medians `variant` / `reference`
    (`ratio_to_float`, whatever the reference is called), its range over the repetitions and
    compare_repeats' verdict on the two runs' ms/step; MISSING without a ratio."""
    ratio = get_path(row, f"ratio_to_float.{variant}")
    if not is_number(ratio):
        return MISSING
    per_repeat = [x for x in get_path(row, f"ratio_to_float_per_repeat.{variant}") or [] if is_number(x)]
    spread = f"{min(per_repeat):.2f}–{max(per_repeat):.2f}; " if len(per_repeat) > 1 else ""
    c = compare_repeats(get_path(row, f"ms_per_step.{variant}") or [], get_path(row, f"ms_per_step.{reference}") or [])
    verdict = "not judged: one repetition" if c is None else c.verdict("slower", "faster")
    return f"{ratio:.2f}× ({spread}{verdict})"


# --------------------------------------------------------------------------
# What every part sees.


@dataclasses.dataclass(frozen=True)
class ReportInputs:
    """What every section sees: all results, published entries, where figures go,
    and the results folder, for the few measurements kept beside results.json
    (e.g. a latency benchmark's JSON); None when there is no folder to read."""
    results: Results
    published: Sequence[Mapping[str, Any]]
    figures_dir: Path
    results_dir: Path | None = None

    def __post_init__(self) -> None:
        # Every part sees a dirty run's numbers as Unrecoverable (see the module docstring).
        object.__setattr__(self, "results", {name: mark_unrecoverable(result)
                                             for name, result in self.results.items()})

    @property
    def groups(self) -> dict[str, Group]:
        return group_seeds(self.results)

    def published_by_id(self, entry_id: str) -> Mapping[str, Any]:
        for entry in self.published:
            if entry["id"] == entry_id:
                return entry
        raise KeyError(f"published.json has no entry {entry_id!r}")

    def figure_link(self, filename: str) -> str:
        """Path of a figure relative to the report (README sits above figures/)."""
        return f"{self.figures_dir.name}/{filename}"


# --------------------------------------------------------------------------
# Columns of a group of runs (one per seed), and their means.


def column(members: Group, dotted: str) -> list[Any]:
    return [get_path(r, dotted) for _, r in members]


def mean_or_none(values: Sequence[Any]) -> float | None:
    numbers = [v for v in values if is_number(v)]
    if not numbers:
        return None
    mean = statistics.fmean([float(v) for v in numbers])
    return Unrecoverable(mean) if any(map(is_unrecoverable, numbers)) else mean


def accuracy_percents(members: Group) -> list[float]:
    return [100.0 * v for _, r in members
            if is_number(v := get_path(r, "metrics.test_accuracy"))]


def mean_accuracy(groups: Mapping[str, Group], group: str) -> float | None:
    """Mean test accuracy in % of a group, None when absent."""
    return mean_or_none(accuracy_percents(groups.get(group, [])))


def kept_text(nonzero: Sequence[Any], total: Sequence[Any]) -> str:
    """`22,000 / 266,200 (8.26 %)` from per-run kept and total counts, MISSING when absent."""
    pairs = [(n, t) for n, t in zip(nonzero, total) if is_number(n) and is_number(t) and t > 0]
    if not pairs:
        return MISSING
    kept = format_stat([n for n, _ in pairs], "{:,.0f}", collapse_equal=True)
    whole = format_stat([t for _, t in pairs], "{:,.0f}", collapse_equal=True)
    percent = format_stat([100.0 * n / t for n, t in pairs], collapse_equal=True)
    return with_mark(f"{kept} / {whole} ({percent} %)", False)


def weights_kept(members: Group) -> str:
    """`22,000 / 266,200 (8.26 %)`: weight-matrix nonzeros over weights, as Han et al. count."""
    return kept_text(column(members, "compression.weights_nonzero"),
                     column(members, "compression.weights_total"))


def signed_points(value: float | None) -> str:
    return MISSING if value is None else f"{value:+.2f}"


def format_times(values: Sequence[Any]) -> str:
    text = format_stat(values, "{:.2f}", collapse_equal=True)
    return text if text == MISSING else f"{text}×"


def val_losses(members: Group) -> list[Any]:
    return column(members, "metrics.val_loss_nats")


def loss_text(members: Group) -> str:
    return format_stat(val_losses(members), "{:.3f}")


TRANSFORMER_BASELINE = "baseline_char_transformer"  # the trained Transformer the Transformer sections start from


def transformer_baseline_loss(groups: Mapping[str, Group]) -> str:
    """The trained baseline Transformer's validation loss text (mean ± std), MISSING when it has not run."""
    return loss_text(groups[TRANSFORMER_BASELINE]) if groups.get(TRANSFORMER_BASELINE) else MISSING


def loss_change(members: Group, dense: float | None) -> float | None:
    """Mean val loss minus the dense model's, in nats (positive: worse)."""
    loss = mean_or_none(val_losses(members))
    return None if loss is None or dense is None else loss - dense


def signed_nats(value: float | None) -> str:
    return MISSING if value is None else f"{value:+.3f}"


def change_vs(members: Group, reference: float | None) -> float | None:
    """Mean accuracy of `members` minus `reference`, in points."""
    mean = mean_or_none(accuracy_percents(members))
    return None if mean is None or reference is None else mean - reference


def config_text(groups: Iterable[Group], dotted: str) -> str:
    """The distinct values of one config field over the runs, MISSING when none records it."""
    return distinct_text(value for members in groups
                         for value in column(members, f"config.{dotted}"))


# --------------------------------------------------------------------------
# Parameter shapes of a run's model, for counts results.json does not break down.


@functools.lru_cache(maxsize=None)
def _token_model_shapes(model_json: str, num_classes: int) -> tuple[tuple[str, tuple[int, ...]], ...]:
    import jax  # imported here: only the parts that count per parameter path need jax and flax
    import numpy as np
    from compression.selection import leaves_by_path
    from experiments import models

    model = models.build_model(json.loads(model_json), num_classes)
    tokens = np.zeros((1, 8), np.int32)
    abstract = jax.eval_shape(lambda key: model.init(key, tokens)["params"], jax.random.PRNGKey(0))
    return tuple((path, tuple(leaf.shape)) for path, leaf in leaves_by_path(abstract).items())


def language_model_shapes(result: Mapping[str, Any]) -> dict[str, tuple[int, ...]] | None:
    """{parameter path: shape} of a language-model run's full (unpruned) model, by jax.eval_shape.

    Built from the run's recorded `config.model`; results.json records no
    vocabulary size, so it is the one that makes the model's size equal the
    recorded `compression.params_total` (a model's size is affine in it).
    None when the config does not build a model or no vocabulary fits.
    """
    model = get_path(result, "config.model")
    total = get_path(result, "compression.params_total")
    if not isinstance(model, Mapping) or not is_number(total):
        return None
    model_json = json.dumps(model, sort_keys=True)

    def size(num_classes: int) -> int:
        return sum(math.prod(shape) for _, shape in _token_model_shapes(model_json, num_classes))

    try:
        one, two = size(1), size(2)
    except Exception:  # a config that builds no token model: nothing to count, shown as MISSING
        return None
    per_class = two - one
    classes = (int(total) - (one - per_class)) / per_class if per_class else 0
    if classes < 1 or not float(classes).is_integer():
        return None
    shapes = dict(_token_model_shapes(model_json, int(classes)))
    return shapes if sum(map(math.prod, shapes.values())) == int(total) else None


# --------------------------------------------------------------------------
# Provenance lines under a table.


def recorded_commands(groups: Iterable[Group]) -> str:
    """`Results from `cmd`.`: the distinct `command` keys of the runs a table shows."""
    commands: list[str] = []
    unrecorded = 0
    for members in groups:
        for _, result in members:
            command = result.get("command")
            if isinstance(command, str) and command.strip():
                if command not in commands:
                    commands.append(command)
            else:
                unrecorded += 1
    if not commands and not unrecorded:
        return ""
    text = ("Results from " + "; ".join(f"`{c}`" for c in commands)) if commands else ""
    if unrecorded:
        note = f"{unrecorded} run{'s' if unrecorded > 1 else ''} without a recorded command"
        text = f"{text} ({note})" if text else f"Results from {note}"
    return text + "."


def not_run_yet(config: str, variants: Sequence[str], groups: Mapping[str, Group],
                total: int | None = None) -> str:
    """`Not run yet: ...` naming the missing variants of `config` and how to run one."""
    missing = [v for v in variants if f"{config}_{v}" not in groups]
    if not missing:
        return ""
    if total is None:
        names = ", ".join(f"`{config}_{v}`" for v in missing)
    else:  # a sweep: name the variants once the prefix is said
        names = (f"{len(missing)} of {total} runs (after `{config}_`: "
                 + ", ".join(f"`{v}`" for v in missing) + ")")
    return f"Not run yet: {names}; each runs with `{REPRODUCE} --configs={config}:VARIANT`."


# --------------------------------------------------------------------------
# Inference latency, as experiments/benchmark_inference.py's --out JSON holds it:
# RESULTS/<latency_dir>/latency.json, one side-by-side timing run whose first
# export is the reference.

LATENCY_FILE = "latency.json"
LATENCY_BATCHES = (1, 128)
# A row's timing against the reference's (compare_repeats over their
# repetitions); NOT_JUDGED where a side recorded fewer than two.
FASTER, SLOWER, NOT_JUDGED = "faster", "slower", "not judged (fewer than two repetitions)"


def load_latency(path: Path) -> dict[str, Any] | None:
    """A benchmark_inference JSON, None when the file does not exist.

    One that is not JSON, or lacks a `rows` list of objects each naming its
    `run`, raises `ResultsError` naming the path (nothing is skipped silently).
    """
    if not path.is_file():
        return None
    data = read_json(path)
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not all(
            isinstance(r, dict) and isinstance(r.get("run"), str) for r in rows):
        raise ResultsError(f"{path}: expected an object with a 'rows' list of objects "
                           "that each name their 'run' (experiments/benchmark_inference.py)")
    return data


def read_latency(inputs: ReportInputs, latency_dir: str) -> tuple[str, dict[str, Any] | None]:
    """(the path as the report names it, the JSON or None) of RESULTS/latency_dir/latency.json."""
    if inputs.results_dir is None:
        return f"{latency_dir}/{LATENCY_FILE}", None
    path = inputs.results_dir / latency_dir / LATENCY_FILE
    return path.as_posix(), load_latency(path)


def latency_by_group(latency: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    """{group: row} of a latency JSON; `baseline_lenet5/seed_0` is `baseline_lenet5`, first wins."""
    found: dict[str, Mapping[str, Any]] = {}
    for row in (latency or {}).get("rows", []):
        found.setdefault(split_seed(row["run"])[0], row)
    return found


def latency_ms(row: Mapping[str, Any] | None, batch: int) -> float | None:
    """A latency row's median ms per call at `batch`, None when not timed there."""
    value = get_path(row or {}, f"ms_median.{batch}")
    return float(value) if is_number(value) else None


def latency_reference_row(latency: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The row of the export the timing run compared every other against."""
    return next((r for r in latency.get("rows", []) if r["run"] == latency.get("reference")), None)


def latency_speedup(latency: Mapping[str, Any], row: Mapping[str, Any] | None,
                    batch: int) -> float | None:
    """The JSON's speedup (reference ms / this ms), else computed from the two medians."""
    value = get_path(row or {}, f"speedup.{batch}")
    if is_number(value):
        return float(value)
    ref_ms, ms = latency_ms(latency_reference_row(latency), batch), latency_ms(row, batch)
    return ref_ms / ms if ref_ms is not None and ms else None


def speed_class(latency: Mapping[str, Any], row: Mapping[str, Any] | None, batch: int) -> str:
    """FASTER / SLOWER / NO_DIFFERENCE than the reference: compare_repeats of the row's
    repetitions against the reference's (overlapping ranges are no difference)."""
    reference = latency_reference_row(latency)
    c = compare_repeats(get_path(row or {}, f"ms_per_repeat.{batch}") or [],
                        get_path(reference or {}, f"ms_per_repeat.{batch}") or [])
    return NOT_JUDGED if c is None else c.verdict(SLOWER, FASTER)


def latency_line(path_text: str, latency: Mapping[str, Any]) -> str:
    """Where the timings come from: the one side-by-side run, its device and command."""
    def field(key: str) -> str:
        value = latency.get(key)
        return MISSING if value in (None, "") else str(value)

    load = [latency.get(k) for k in ("load_average_before", "load_average_after")]
    load_text = (f"load {load[0][0]:.1f} → {load[1][0]:.1f}"
                 if all(isinstance(l, list) and l and is_number(l[0]) for l in load)
                 else f"load {MISSING}")
    return (f"Latency: every export above was timed side by side in one run, "
            f"`{field('command')}`, on device {field('device')} (backend {field('backend')}, "
            f"{field('cpu_count')} CPUs, {load_text}, jax {field('jax')}), recorded in "
            f"`{path_text}`: the median over {field('repeats')} interleaved repetitions of the "
            f"median time of one jitted forward pass on {field('input')}, per call at each batch "
            f"size; speedup is the reference `{field('reference')}`'s ms over the row's "
            f"(> 1 is faster).")


def latency_table(inputs: ReportInputs, latency_dir: str, rows: Sequence[tuple[str, Sequence[str]]],
                  groups: Mapping[str, Group]) -> str:
    """Exports timed side by side: one row per (label, candidate groups), timed as the first
    candidate the latency JSON holds, with its parameters, FLOPs, ms per call and speedup
    at each of LATENCY_BATCHES and whether that is faster than the reference by the
    repetitions' ranges (speed_class). Without the JSON: the command that measures it,
    timing each row's first candidate (its first run where it has results, else seed_0)."""
    path_text, latency = read_latency(inputs, latency_dir)
    if latency is None:
        runs = ",".join(f"runs/{groups[c][0][0]}" if groups.get(c) else f"runs/{c}/seed_0"
                        for c in (candidates[0] for _, candidates in rows))
        return (f"No latency measurement (`{path_text}`) yet: run `python -m "
                f"experiments.benchmark_inference --runs={runs} --out={path_text}` "
                "(the first run is the reference).")
    timed = latency_by_group(latency)
    cells, untimed = [], []
    for label, candidates in rows:
        group = next((g for g in candidates if g in timed), None)
        if group is None:
            untimed.append(label)
            continue
        row = timed[group]
        cells.append([label, f"`{group}`",
                      *(f"{row[k]:,.0f}" if is_number(row.get(k)) else MISSING
                        for k in ("params_total", "flops_per_example")),
                      *(MISSING if (ms := latency_ms(row, b)) is None else f"{ms:.3f}"
                        for b in LATENCY_BATCHES),
                      *(MISSING if (x := latency_speedup(latency, row, b)) is None
                        else f"{x:.2f}× ({speed_class(latency, row, b)})" for b in LATENCY_BATCHES)])
    parts = [markdown_table(["export", "timed run", "parameters", "FLOPs / example",
                             *[f"ms / call, b={b}" for b in LATENCY_BATCHES],
                             *[f"speedup, b={b}" for b in LATENCY_BATCHES]], cells)] if cells else []
    if untimed:
        parts.append("Not in the latency run: " + ", ".join(untimed) + ".")
    parts.append(latency_line(path_text, latency))
    return "\n\n".join(parts)


# --------------------------------------------------------------------------
# Choices made by experiments.select, kept at paper/selection/NAME.json.


def read_selection(inputs: ReportInputs, name: str) -> dict[str, Any] | None:
    """paper/selection/NAME.json (the folder beside the results folder), as experiments.select wrote it;
    None without a results folder or when the choice has not been made."""
    if inputs.results_dir is None:
        return None
    path = inputs.results_dir.parent / "selection" / f"{name}.json"
    return read_json(path) if path.is_file() else None


def reported_values(point: Mapping[str, Any], key: str) -> list[Any]:
    """A selection point's reported-split metric `key`, one per run (experiments.select keeps each run's
    reported-split metrics under the point's "reported", by config)."""
    return [run.get(key) for runs in point.get("reported", {}).values() for run in runs]


def selection_summary(inputs: ReportInputs, name: str) -> str | None:
    """One paragraph on a choice experiments.select made (paper/selection/NAME.json): the rule, the
    chosen point, and every point's score (and size, under a --smallest rule); None when not made."""
    sweep = read_selection(inputs, name)
    if sweep is None:
        return None
    metric = sweep.get("metric", "")
    percent = metric == "selection_accuracy"
    rule = sweep.get("rule")

    def label(point: Mapping[str, Any]) -> str:
        return ", ".join(f"{k.removeprefix('arg.')} = {v}" for k, v in point.items())

    def score(point: Mapping[str, Any]) -> str:
        mean = point.get("mean")
        if not is_number(mean):
            return "diverged"
        text = f"{100 * mean:.2f} %" if percent else f"{mean:.4f}"
        return text + (f", {point['size']:,.0f}" if rule and is_number(point.get("size")) else "")

    if rule:
        distance = f"{100 * rule['within']:g} points" if percent else f"{rule['within']:g}"
        how = f"the smallest `{rule['smallest']}` among the points within {distance} of the best {metric}"
    else:
        how = f"the best {metric}"
    seeds = sorted({s for p in sweep.get("points", []) for s in p.get("seeds", [])})
    return (f"Chosen on the selection split by `{sweep.get('command', '')}` ({how}, seed"
            f"{'s' if len(seeds) != 1 else ''} {', '.join(map(str, seeds))}; `paper/selection/{name}.json`): "
            f"**{label(sweep['chosen'])}**. Every point ({metric}"
            + (f", {rule['smallest']}" if rule else "") + "): "
            + "; ".join(f"{label(p['point'])}: {score(p)}" for p in sweep.get("points", [])) + ".")
