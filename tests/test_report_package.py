"""The report builder as a package: the committed report rebuilds byte for byte,
families are found by name from one list, and no family imports another."""

from __future__ import annotations

import ast
import sys
import types
from pathlib import Path

import pytest

from experiments.report import builder, common

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "paper"
PACKAGE_DIR = REPO / "experiments" / "report"


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory) -> Path:
    """paper/ rebuilt from the committed paper/results/ into a temporary folder."""
    out = tmp_path_factory.mktemp("paper")
    # The report names its results folder as given, so give it as `make paper` does.
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        builder.write_paper("paper/results", out, PAPER / "published.json")
    return out


def test_rebuilt_report_equals_the_committed_one(rebuilt):
    assert (rebuilt / "README.md").read_bytes() == (PAPER / "README.md").read_bytes()


def test_rebuilt_figures_equal_the_committed_ones(rebuilt):
    committed = sorted(p.name for p in (PAPER / "figures").glob("*.png"))
    assert sorted(p.name for p in (rebuilt / "figures").glob("*.png")) == committed
    for name in committed:
        assert (rebuilt / "figures" / name).read_bytes() == (
            PAPER / "figures" / name).read_bytes(), name


def _report_imports(path: Path) -> set[str]:
    """The experiments.report modules a file imports (`from experiments.report import x` too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "experiments.report":
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("experiments.report."):
            found.add(node.module.rsplit(".", 1)[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.rsplit(".", 1)[1] for a in node.names
                      if a.name.startswith("experiments.report.")}
    return found


def test_families_import_only_common_and_common_no_family():
    assert _report_imports(PACKAGE_DIR / "common.py") == set()
    assert _report_imports(PACKAGE_DIR / "builder.py") == {"common"}  # families by name
    modules = {p.stem for p in PACKAGE_DIR.glob("*.py")} - {"__init__", "common", "builder"}
    assert modules == set(builder.FAMILIES), "every family module is listed, once"
    assert len(builder.FAMILIES) == len(set(builder.FAMILIES))
    for name in builder.FAMILIES:
        assert _report_imports(PACKAGE_DIR / f"{name}.py") == {"common"}, name


def test_every_family_declares_its_section_and_parts():
    for family in builder.family_modules():
        assert isinstance(family.SECTION, str) and family.SECTION, family.__name__
        assert family.PARTS and all(callable(part) for _, part in family.PARTS), family.__name__
        if hasattr(family, "PREFIXES"):
            assert family.RESULTS_NAME, family.__name__
    titles = [title for title, _ in builder.sections()]
    assert titles == ["Baselines", "Pruning", "Quantization", "Distillation", "Factorization and sharing", "One-shot compression",
                      "Architecture search"]


def _family(name: str, section: str, text: str) -> types.ModuleType:
    module = types.ModuleType(f"{builder.PACKAGE}.{name}")
    module.SECTION = section

    def part(inputs, groups, refs):
        return f"{text}, cited as {refs.cite(inputs.published[0])}"

    module.PARTS = (("A new part", part),)
    return module


def test_a_new_family_is_one_module_and_one_list_entry(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, f"{builder.PACKAGE}.extra_family",
                        _family("extra_family", "Extra", "new family text"))
    monkeypatch.setitem(sys.modules, f"{builder.PACKAGE}.more_quantization",
                        _family("more_quantization", "Quantization", "joins quantization"))
    published = common.load_published(PAPER / "published.json")
    inputs = common.ReportInputs(results={}, published=published, figures_dir=tmp_path)
    after = builder.FAMILIES.index("quantization_benchmark") + 1  # the last family of Quantization
    names = (*builder.FAMILIES[:after], "more_quantization", *builder.FAMILIES[after:], "extra_family")
    report = builder.build_report(inputs, "paper/results", builder.sections(names))

    quantization = report.split("## Quantization\n\n", 1)[1].split("\n\n## ", 1)[0]
    # A family joining a section comes after that section's parts and shares its references.
    assert quantization.index("### A new part\n\njoins quantization") > quantization.index(
        "### Cost of quantization-aware training")
    assert quantization.endswith(f"References:\n\n1. {published[0]['citation']}")
    assert report.endswith("## Extra\n\n### A new part\n\nnew family text, cited as "
                           f"{common.short_cite(published[0])} [1]\n\nReferences:\n\n"
                           f"1. {published[0]['citation']}\n")
