"""Which commit a result comes from, and whether that commit's code can be recovered.

A result names `git rev-parse HEAD`, with `-dirty` when files that decide
what a run computes (CODE_PATHS) had uncommitted changes: then the commit
alone does not give back the code. `experiments.reproduce` refuses to write
the paper's results from such a tree; `experiments.train.versions` stamps
every results.json with the same rule.
"""
from __future__ import annotations

import os
import subprocess
from typing import Sequence

from experiments.workdir import RunError

# What decides a run's numbers; an uncommitted change here makes its commit unrecoverable.
CODE_PATHS: tuple[str, ...] = ("compression", "experiments", "configs", "pyproject.toml",
                               "constraints.txt", "Makefile")


class UncommittedCodeError(RunError):
    """The working tree has uncommitted code, and the results would go to paper/."""


def uncommitted_code_changes(repo_root: str | os.PathLike[str],
                             paths: Sequence[str] = CODE_PATHS) -> list[str]:
    """Files under `paths` of the git tree at `repo_root` with uncommitted changes, sorted.

    Staged or unstaged changes to tracked files and untracked files count
    (`git status --porcelain --untracked-files=all`, so ignored files do not);
    a rename lists both names. Raises UncommittedCodeError when git cannot
    tell (no git, not a repository): a tree of unknown state is not committed.
    """
    try:
        out = subprocess.run(["git", "status", "--porcelain=v1", "-z", "--untracked-files=all",
                              "--", *paths], cwd=repo_root, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        raise UncommittedCodeError(f"cannot run git status in {repo_root}: {e}") from e
    if out.returncode != 0:
        raise UncommittedCodeError(f"git status failed in {repo_root}: "
                                   f"{out.stderr.decode(errors='replace').strip()}")
    changed: set[str] = set()
    entries = out.stdout.decode("utf-8", errors="surrogateescape").split("\0")
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        status, path = entry[:2], entry[3:]
        changed.add(path)
        if "R" in status or "C" in status:  # -z: the original name follows as its own entry
            changed.add(entries[i])
            i += 1
    return sorted(changed)


def commit_of(repo_root: str | os.PathLike[str]) -> str:
    """HEAD's commit at `repo_root`, with "-dirty" when CODE_PATHS have uncommitted changes; "unknown" without git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=repo_root,
                                timeout=10).stdout.strip()
        dirty = bool(uncommitted_code_changes(repo_root))
    except (OSError, subprocess.SubprocessError, UncommittedCodeError):
        return "unknown"
    return (commit + ("-dirty" if dirty else "")) if commit else "unknown"


SEED_FIELD = "{seed}"


def seeded_path(path: str, seed: int) -> str:
    """`path` with "{seed}" replaced by the run's seed: an export path that follows the seed.

    A config whose `init_from` or `teacher.export` is
    runs/baseline_lenet300/seed_{seed}/export/params.safetensors starts each of
    its seeds from the baseline of the same seed, so `--seeds=0,1,2` varies
    the pretrained model too (a post-training method has no other randomness).
    """
    return path.replace(SEED_FIELD, str(int(seed))) if path else path


EXPORT_FILE = os.path.join("export", "params.safetensors")


def export_file(path: str) -> str:
    """The export a path names: a file itself (a .safetensors path, or any existing file), else a run
    folder's export/params.safetensors."""
    return path if path.endswith(".safetensors") or os.path.isfile(path) else os.path.join(path, EXPORT_FILE)

