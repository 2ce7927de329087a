"""Runs every experiment config's CPU-scale default variant on two commits and compares them (issue 14).

python -m experiments.compare_commits --old=fe3a311 --new=HEAD [--configs=a,b] [--workdir=DIR]
    [--data_dir=/abs/.data] [--out=FILE.json] [--keep]

For each commit a git worktree is made under DIR/worktrees/ and each config runs
there as `python -m experiments.main --config=configs/NAME.py:VARIANT` with the
worktree as cwd, so that commit's code is imported (checked: every results.json
must name the worktree's commit in versions.git_commit). VARIANT is the config's
default variant at CPU scale as the OLD commit spells it: its `get_config`
default plus `_quick`, or `quick` where the default is "" (or nothing at all
where the old commit refuses `quick` there, as fe3a311's quickstart, whose
default is CPU-scale already). The same string runs
on both sides. A config that fine-tunes an earlier run's export (`init_from`,
e.g. runs/baseline_lenet5/seed_0/export/params.safetensors) first gets that
baseline run at its quick variant so that the export lands at that path inside
the worktree (the worktree's runs/ links to DIR/<commit>/deps/, so it survives).

Per config, every key of results.json's `metrics` (exact equality) and
`compression.bytes_exported` (exact) are compared; one table row per config,
exit code 1 if anything differs or fails. Runs are kept under
DIR/<commit>/runs/NAME_VARIANT/, so a rerun skips what already finished.
"""
from __future__ import annotations

import argparse
import ast
import json
import math
import os
import subprocess
import sys
import time
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXCLUDED = ("default.py", "common.py", "__init__.py")
MAIN_METRICS = ("test_accuracy", "val_loss_nats")
EXPORT_TAIL = ("export", "params.safetensors")


# ---------------------------------------------------------------- pure helpers


def get_config_default(source: str) -> Optional[str]:
    """The default of the first parameter of a module-level `get_config` in `source`.

    Returns "" when get_config has no parameter or its first one has no default,
    None when the module has no get_config. Raises ValueError for a default that
    is not a string literal.
    """
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "get_config":
            args = node.args.posonlyargs + node.args.args
            if not args:
                return ""
            defaults = [None] * (len(args) - len(node.args.defaults)) + list(node.args.defaults)
            default = defaults[0]
            if default is None:
                return ""
            if isinstance(default, ast.Constant) and isinstance(default.value, str):
                return default.value
            raise ValueError(f"get_config's default is not a string literal: {ast.unparse(default)}")
    return None


def quick_variant(default: str) -> str:
    """The CPU-scale spelling of a default variant: `quick` for "", else DEFAULT_quick."""
    if not default:
        return "quick"
    return default if default == "quick" or default.endswith("_quick") else f"{default}_quick"


def is_experiment_config(filename: str, source: str) -> bool:
    """configs/*.py with a module-level get_config, except default.py, common.py and *_common.py."""
    base = os.path.basename(filename)
    if not base.endswith(".py") or base in EXCLUDED or base.endswith("_common.py"):
        return False
    return get_config_default(source) is not None


def baseline_of(init_from: str) -> tuple[str, str]:
    """(config name, run workdir) for an init_from path runs/NAME[/...]/export/params.safetensors.

    The workdir is the path less export/params.safetensors, relative like
    init_from, so that a run there writes its export exactly at init_from.
    """
    parts = os.path.normpath(init_from).split(os.sep)
    if os.path.isabs(init_from) or len(parts) < 4 or parts[0] != "runs" or tuple(parts[-2:]) != EXPORT_TAIL:
        raise ValueError(f"init_from {init_from!r} is not runs/NAME[/...]/export/params.safetensors; "
                         "cannot tell which config trains it")
    return parts[1], os.path.join(*parts[:-2])


def main_metric(metrics: dict) -> Optional[str]:
    """The metric a table row shows: test_accuracy, else val_loss_nats, else the first key."""
    for key in MAIN_METRICS:
        if key in metrics:
            return key
    return sorted(metrics)[0] if metrics else None


def _same(a, b) -> bool:
    """Exact equality, where NaN on both sides counts as the same."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def compare_results(old: dict, new: dict) -> list[str]:
    """The differing keys of two results.json dicts: `metrics.KEY` (exact) and `compression.bytes_exported`.

    A key present on one side only is a difference. Empty list: identical.
    """
    diffs = []
    old_m, new_m = old.get("metrics", {}), new.get("metrics", {})
    for key in sorted(set(old_m) | set(new_m)):
        if key not in old_m or key not in new_m or not _same(old_m[key], new_m[key]):
            diffs.append(f"metrics.{key}")
    old_b = old.get("compression", {}).get("bytes_exported")
    new_b = new.get("compression", {}).get("bytes_exported")
    if old_b is None or new_b is None or old_b != new_b:
        diffs.append("compression.bytes_exported")
    return diffs


def run_name(name: str, variant: str) -> str:
    """NAME_VARIANT, or NAME for the bare default variant."""
    return f"{name}_{variant}" if variant else name


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def format_table(rows: list[dict]) -> str:
    """The printed table: config, variant, main metric old/new, bytes old/new, verdict."""
    header = ["config", "variant", "metric", "old", "new", "bytes old", "bytes new", "result"]
    lines = [header]
    for r in rows:
        lines.append([r["config"], r.get("variant") or "''", r.get("metric") or "-",
                      _fmt(r.get("metric_old")), _fmt(r.get("metric_new")),
                      _fmt(r.get("bytes_old")), _fmt(r.get("bytes_new")), r["verdict"]])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(c.ljust(w) for c, w in zip(line, widths)) + "  " + line[-1])
        if n == 0:
            out.append("  ".join("-" * w for w in widths) + "  " + "-" * 6)
    return "\n".join(out)


def row_for(name: str, variant: str, old: Optional[dict], new: Optional[dict],
            error: Optional[str] = None) -> dict:
    """One table row (and --out record) for a config from its two results dicts (None where a side failed)."""
    row = {"config": name, "variant": variant}
    if old is not None:
        row["metric"] = main_metric(old.get("metrics", {}))
    elif new is not None:
        row["metric"] = main_metric(new.get("metrics", {}))
    for side, results in (("old", old), ("new", new)):
        if results is not None:
            row[f"metric_{side}"] = results.get("metrics", {}).get(row.get("metric"))
            row[f"bytes_{side}"] = results.get("compression", {}).get("bytes_exported")
            row[f"{side}_results"] = {k: results.get(k) for k in ("metrics", "compression", "timing", "versions")}
    if error:
        row["differences"] = None
        row["verdict"] = error
    else:
        row["differences"] = compare_results(old, new)
        row["verdict"] = "identical" if not row["differences"] else "differs: " + ", ".join(row["differences"])
    return row


# ---------------------------------------------------------------- git and runs


def git(*args: str, cwd: str = ROOT) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"git {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout.strip()


def log(message: str, start: float) -> None:
    elapsed = int(time.time() - start)
    print(f"[{elapsed // 60:3d}m{elapsed % 60:02d}s] {message}", flush=True)


def list_configs(tree: str) -> dict[str, str]:
    """name -> source of every experiment config in the worktree's configs/."""
    folder = os.path.join(tree, "configs")
    out = {}
    for f in sorted(os.listdir(folder)):
        path = os.path.join(folder, f)
        if f.endswith(".py") and os.path.isfile(path):
            source = open(path).read()
            if is_experiment_config(f, source):
                out[f[:-3]] = source
    return out


PROBE = r"""
import importlib, importlib.util, json, os, sys
tree = os.path.realpath(os.getcwd())
origins = {m: importlib.util.find_spec(m).origin or "" for m in ("compression", "configs", "experiments")}
foreign = {m: o for m, o in origins.items() if not os.path.realpath(o).startswith(tree + os.sep)}
out = {"foreign": foreign, "init_from": {}, "errors": {}}
for name, variant in json.loads(sys.argv[1]).items():
    try:
        out["init_from"][name] = importlib.import_module("configs." + name).get_config(variant).get("init_from") or ""
    except Exception as e:
        out["errors"][name] = f"{type(e).__name__}: {e}"
print("PROBE" + json.dumps(out))
"""


class Side:
    """One commit: its worktree, its run folders under DIR/<sha>/ and its config list."""

    def __init__(self, label: str, ref: str, workdir: str):
        self.label, self.ref = label, ref
        self.sha = git("rev-parse", "--verify", f"{ref}^{{commit}}")
        self.short = self.sha[:10]
        self.tree = os.path.join(workdir, "worktrees", self.short)
        self.runs = os.path.join(workdir, self.short, "runs")
        self.deps = os.path.join(workdir, self.short, "deps")
        self.init_from: dict[str, str] = {}
        self.config_errors: dict[str, str] = {}
        self.created = False
        self.configs: dict[str, str] = {}

    def open(self) -> None:
        """Makes (or reuses) the worktree at the commit and links its runs/ to DIR/<sha>/deps/."""
        if os.path.isdir(self.tree):
            if git("rev-parse", "HEAD", cwd=self.tree) != self.sha:
                raise RuntimeError(f"{self.tree} exists at another commit; remove it (git worktree remove)")
        else:
            os.makedirs(os.path.dirname(self.tree), exist_ok=True)
            git("worktree", "add", "--detach", self.tree, self.sha)
        self.created = True
        os.makedirs(self.deps, exist_ok=True)
        os.makedirs(self.runs, exist_ok=True)
        link = os.path.join(self.tree, "runs")
        if os.path.islink(link):
            if os.path.realpath(link) != os.path.realpath(self.deps):
                raise RuntimeError(f"{link} links elsewhere than {self.deps}")
        elif os.path.exists(link):
            raise RuntimeError(f"{link} exists and is not the link to {self.deps}")
        else:
            os.symlink(os.path.abspath(self.deps), link)
        self.configs = list_configs(self.tree)

    def probe(self, variants: dict[str, str]) -> None:
        """Checks that the worktree's own packages are imported there; resolves each config's init_from."""
        out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(variants)], cwd=self.tree,
                             capture_output=True, text=True, env=_env())
        line = [s for s in out.stdout.splitlines() if s.startswith("PROBE")]
        if out.returncode or not line:
            raise RuntimeError(f"probing {self.tree} failed:\n{out.stderr[-3000:]}")
        result = json.loads(line[-1][len("PROBE"):])
        if result["foreign"]:
            raise RuntimeError(f"in {self.tree} these packages are imported from elsewhere: {result['foreign']}")
        self.init_from, self.config_errors = result["init_from"], result["errors"]

    def close(self) -> None:
        if not os.path.isdir(self.tree):
            return  # already removed (old and new are the same commit)
        link = os.path.join(self.tree, "runs")
        if os.path.islink(link):
            os.unlink(link)  # the deps stay under DIR/<sha>/deps/
        git("worktree", "remove", self.tree)


def _env() -> dict:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # nothing ahead of or beside the worktree's own code
    return env


class RunFailed(RuntimeError):
    """A run (or its dependency) failed: reported in its row, the other configs go on."""


def read_results(path: str) -> Optional[dict]:
    """results.json if it exists and parses (a run killed while writing it has to run again), else None."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def run_config(side: Side, name: str, variant: str, workdir: str, data_dir: str, start: float,
               what: str) -> dict:
    """results.json of configs/NAME.py:VARIANT run in the side's worktree with --workdir=workdir.

    Skips the run when workdir already holds a results.json; checks it names the side's commit.
    """
    results_path = os.path.join(workdir, "results.json")
    results = read_results(results_path)
    if results is None:
        log(f"{side.label} {side.short} {what} {name}:{variant} -> {workdir}", start)
        t0 = time.time()
        os.makedirs(os.path.dirname(workdir), exist_ok=True)
        config_arg = f"configs/{name}.py" + (f":{variant}" if variant else "")
        cmd = [sys.executable, "-m", "experiments.main", f"--config={config_arg}", f"--workdir={workdir}",
               f"--config.data_dir={data_dir}", "--noprogress"]
        log_path = workdir.rstrip(os.sep) + ".log"
        with open(log_path, "a") as f:
            f.write(f"$ (cd {side.tree} && {' '.join(cmd)})\n")
            f.flush()
            rc = subprocess.run(cmd, cwd=side.tree, stdout=f, stderr=subprocess.STDOUT, env=_env()).returncode
        results = read_results(results_path)
        if rc or results is None:
            with open(log_path) as f:
                tail = f.read()[-2000:]
            raise RunFailed(f"{side.label} run of {name}:{variant} failed (exit {rc}); log {log_path}:\n{tail}")
        log(f"{side.label} {name} done in {time.time() - t0:.0f} s", start)
    else:
        log(f"{side.label} {side.short} {what} {name}:{variant}: results.json already there, skipped", start)
    commit = results.get("versions", {}).get("git_commit")
    if commit != side.sha:
        raise RuntimeError(f"{results_path} was written by commit {commit!r}, not the {side.label} worktree's "
                           f"{side.sha}: the run did not use the worktree's code (or the folder is stale)")
    return results


def ensure_init_from(side: Side, name: str, variants: dict[str, str], data_dir: str, start: float,
                     chain: tuple = ()) -> None:
    """Runs the baseline whose export `name` fine-tunes from, if that file is missing in the worktree."""
    if name in side.config_errors:
        raise RunFailed(f"{side.label}: configs/{name}.py:{variants.get(name)} does not build: "
                        f"{side.config_errors[name]}")
    init_from = side.init_from.get(name, "")
    if not init_from or os.path.exists(os.path.join(side.tree, init_from)):
        return
    try:
        baseline, rel_workdir = baseline_of(init_from)
    except ValueError as e:
        raise RunFailed(f"{side.label}: {name}: {e}") from None
    if baseline not in side.configs or baseline not in variants:
        raise RunFailed(f"{side.label}: {name} needs {init_from}, but configs/{baseline}.py is not an "
                        "experiment config there")
    if baseline in chain:
        raise RunFailed(f"{side.label}: init_from cycle {' -> '.join(chain + (baseline,))}")
    ensure_init_from(side, baseline, variants, data_dir, start, chain + (name,))
    run_config(side, baseline, variants[baseline], os.path.join(side.tree, rel_workdir), data_dir, start,
               f"baseline for {name}:")
    if not os.path.exists(os.path.join(side.tree, init_from)):
        raise RunFailed(f"{side.label}: the {baseline} run did not write {init_from}")


# ---------------------------------------------------------------- command


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.compare_commits", description=__doc__.split("\n")[0])
    p.add_argument("--old", required=True, help="The commit before the change.")
    p.add_argument("--new", required=True, help="The commit after the change.")
    p.add_argument("--configs", default="", help="Comma-separated config names (default: all).")
    p.add_argument("--workdir", default=os.path.join(ROOT, "runs", "compare_commits"),
                   help="Where worktrees and runs go (kept, so a rerun resumes).")
    p.add_argument("--data_dir", default=os.path.join(ROOT, ".data"), help="The prepared data (absolute).")
    p.add_argument("--out", default="", help="Write everything as JSON here.")
    p.add_argument("--keep", action="store_true", help="Keep the worktrees at the end.")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    start = time.time()
    workdir, data_dir = os.path.abspath(args.workdir), os.path.abspath(args.data_dir)
    if not os.path.isdir(data_dir):
        raise SystemExit(f"--data_dir {data_dir} does not exist (make setup prepares .data/)")
    old, new = Side("old", args.old, workdir), Side("new", args.new, workdir)
    sides = [old, new]  # the same commit twice shares one worktree and its runs
    rows, only = [], {"old": [], "new": []}
    try:
        for side in sides:
            side.open()
            log(f"{side.label}: {side.ref} = {side.sha}, worktree {side.tree}", start)
        wanted = [c for c in args.configs.split(",") if c] or sorted(set(old.configs) | set(new.configs))
        unknown = [c for c in wanted if c not in old.configs and c not in new.configs]
        if unknown:
            raise SystemExit(f"not experiment configs on either commit: {', '.join(unknown)}")
        only["old"] = [c for c in wanted if c not in new.configs]
        only["new"] = [c for c in wanted if c not in old.configs]
        names = [c for c in wanted if c in old.configs and c in new.configs]
        # The variant as the old commit spells it (a side's own spelling only for its baselines missing on old).
        variants, bad = {}, {}
        for side in (new, old):
            for c, source in side.configs.items():
                try:
                    variants[c] = quick_variant(get_config_default(source))
                except ValueError as e:
                    variants.pop(c, None)
                    bad[c] = f"{side.label}: configs/{c}.py: {e}"
        old.probe({c: variants[c] for c in old.configs if c in variants})
        bare = [c for c in old.config_errors if variants.get(c) == "quick"]
        if bare:  # "" is their default and it is CPU-scale already (quickstart at fe3a311 refuses `quick`)
            variants.update({c: "" for c in bare})
            old.probe({c: variants[c] for c in old.configs if c in variants})
        new.probe({c: variants[c] for c in new.configs if c in variants})
        for c in only["old"] + only["new"]:
            log(f"{c}: only on the {'old' if c in only['old'] else 'new'} commit; not run", start)
        for i, name in enumerate(names, 1):
            variant = variants.get(name)
            if variant is None:
                print(bad[name], flush=True)
                rows.append(row_for(name, "", None, None, "variant unknown"))
                continue
            log(f"({i}/{len(names)}) {name}:{variant}", start)
            results, error = {}, None
            for side in sides:
                try:
                    ensure_init_from(side, name, variants, data_dir, start)
                    results[side.label] = run_config(side, name, variant,
                                                     os.path.join(side.runs, run_name(name, variant)),
                                                     data_dir, start, "config")
                except RunFailed as e:
                    print(str(e), flush=True)
                    results[side.label] = None
                    error = (error + "; " if error else "") + f"{side.label} run failed"
            row = row_for(name, variant, results.get("old"), results.get("new"), error)
            rows.append(row)
            log(f"{name}: {row['verdict']}", start)
    finally:
        if not args.keep:
            for side in sides:
                if side.created:
                    try:
                        side.close()
                    except RuntimeError as e:
                        print(f"could not remove worktree {side.tree}: {e}", flush=True)
    print()
    print(f"old {old.ref} = {old.sha}\nnew {new.ref} = {new.sha}")
    print(format_table(rows))
    for label, names_only in only.items():
        if names_only:
            print(f"only on the {label} commit (not run): {', '.join(names_only)}")
    failed = [r for r in rows if r["verdict"] != "identical"]
    print(f"{len(rows) - len(failed)} of {len(rows)} identical" + (f"; differ or failed: "
          f"{', '.join(r['config'] for r in failed)}" if failed else ""))
    if args.out:
        report = {"old": {"ref": old.ref, "commit": old.sha}, "new": {"ref": new.ref, "commit": new.sha},
                  "data_dir": data_dir, "workdir": workdir, "rows": rows, "only_old": only["old"],
                  "only_new": only["new"], "identical": not failed and bool(rows),
                  "wall_s": time.time() - start}
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2, sort_keys=True)
        print(f"written: {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
