"""Where a run came from: the user's git repository, the command, the user, the host, the packages.

`source_tags` gives the MLflow tags every run carries (MLflow's own `mlflow.source.*` tags, which its UI
shows, and Hyrax's environment tags); `git_diff` and `requirements` give the texts logged as artifacts
(`GIT_DIFF_FILE`, `REQUIREMENTS_FILE`), and `changed_packages` compares a recorded requirements text with
what is installed now. Git is asked through its command line with a short timeout; trouble with git
(not installed, not a repository, a slow disk) never fails a run: it only means no git tags.
"""

from __future__ import annotations

import functools
import getpass
import importlib.metadata
import itertools
import logging
import os
import platform
import re
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hyrax import tags
from hyrax.redact import redact

log = logging.getLogger("hyrax")

DISTRIBUTION = "hyrax-runner"
GIT_TIMEOUT_S = 5.0
DIFF_TIMEOUT_S = 15.0
UNTRACKED_CONTENT_LIMIT = 100_000  # bytes: larger untracked files are named in the diff, not included
MAX_UNTRACKED_CONTENTS = 50  # untracked files whose contents the diff includes (the rest: names only)
MAX_UNTRACKED_NAMES = 500
_GIT_ENV = {"GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0"}  # never take index.lock, never prompt
# What Hyrax itself writes into the launch directory: untracked, these do not make a checkout dirty.
HYRAX_OUTPUTS = ("runs", "multiruns", "outputs", "mlartifacts", ".hyrax")
ENVIRONMENT_DIR = "environment"  # where a run (or sweep) directory keeps requirements.txt, git_diff.patch
HYRAX_STORE = "mlflow.db"  # the default store, with its lock, journal and WAL files beside it


@dataclass(frozen=True)
class GitState:
    """The state of the git repository a run was launched in."""

    commit: str
    branch: str | None  # None when HEAD is detached
    dirty: bool  # uncommitted changes to tracked files, or untracked files that are not ignored
    repo_url: str | None  # the `origin` remote, password masked
    root: Path


def _git(
    cwd: Path, *args: str, ok_codes: tuple[int, ...] = (0,), timeout: float = GIT_TIMEOUT_S
) -> str | None:
    """The output of `git <args>` run in `cwd`, or None (logged at debug) when it fails."""
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            encoding="utf-8",
            errors="replace",
            timeout=timeout,
            env={**os.environ, **_GIT_ENV},
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as e:
        log.debug("git %s in %s failed: %s", " ".join(args), cwd, e)
        return None
    if done.returncode not in ok_codes:
        log.debug("git %s in %s exited %d: %s", " ".join(args), cwd, done.returncode, done.stderr.strip())
        return None
    return done.stdout


def git_state(project_dir: Path) -> GitState | None:
    """The git repository containing `project_dir`, or None (not in one, no commits yet, no git)."""
    root = _git(Path(project_dir), "rev-parse", "--show-toplevel")
    if not root:
        return None
    root_dir = Path(root.strip())
    status = _git(root_dir, "status", "--porcelain=v2", "--branch", "-z", "--untracked-files=normal")
    if status is None:
        return None
    headers = dict(
        entry[2:].split(" ", 1) for entry in status.split("\0") if entry.startswith("# ") and " " in entry[2:]
    )
    commit = headers.get("branch.oid", "(initial)")
    if commit == "(initial)":
        log.debug("git repository %s has no commits yet", root_dir)
        return None
    branch = headers.get("branch.head")
    url = _git(root_dir, "remote", "get-url", "origin")
    return GitState(
        commit=commit,
        branch=None if branch in (None, "(detached)") else branch,
        dirty=any(_counts(entry) for entry in status.split("\0")),
        repo_url=redact(url.strip()) if url and url.strip() else None,
        root=root_dir,
    )


def _counts(entry: str) -> bool:
    """Whether a `git status --porcelain=v2` entry is a change of the user's (not a header, not one of
    Hyrax's own untracked outputs)."""
    if not entry or entry.startswith("# "):
        return False
    return not (entry.startswith("? ") and _is_output(entry[2:]))


def _is_output(path: str) -> bool:
    """Whether an untracked path is, or lies in, one of Hyrax's outputs (`runs/`, `mlflow.db`, ...)."""
    return any(part in HYRAX_OUTPUTS or part.startswith(HYRAX_STORE) for part in Path(path.rstrip("/")).parts)


def git_diff(state: GitState) -> str:
    """The uncommitted changes as a patch: tracked ones against HEAD, then untracked files ("" if clean)."""
    tracked = _git(state.root, "diff", "HEAD", "--no-color", "--no-ext-diff", timeout=DIFF_TIMEOUT_S) or ""
    listed = _git(state.root, "ls-files", "--others", "--exclude-standard", "-z", timeout=DIFF_TIMEOUT_S)
    untracked = [name for name in (listed or "").split("\0") if name and not _is_output(name)]
    if not untracked:
        return tracked
    return tracked + _untracked_patch(state.root, untracked)


def _untracked_patch(root: Path, names: list[str]) -> str:
    """A comment naming the untracked files, then the small text ones as diffs against /dev/null."""
    shown = list(itertools.islice((n for n in names if _small_text(root / n)), MAX_UNTRACKED_CONTENTS))
    lines = ["# Untracked files (not committed, not ignored):"]
    lines += [
        f"#   {n}{'' if n in shown else '  (contents not included)'}" for n in names[:MAX_UNTRACKED_NAMES]
    ]
    if len(names) > MAX_UNTRACKED_NAMES:
        lines.append(f"#   ... and {len(names) - MAX_UNTRACKED_NAMES} more")
    patches = [_new_file_patch(root, n) for n in shown]
    return "\n".join(lines) + "\n" + "".join(patches)


def _small_text(path: Path) -> bool:
    """Whether `path` is a regular file under the size limit with no NUL byte (text, as git sees it)."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size >= UNTRACKED_CONTENT_LIMIT:
            return False
        with path.open("rb") as f:
            return b"\0" not in f.read(8000)
    except OSError:
        return False


def _new_file_patch(root: Path, name: str) -> str:
    """The untracked file `name` as a patch that creates it."""
    args = ("diff", "--no-index", "--no-color", "--no-ext-diff", "--", "/dev/null", name)
    return _git(root, *args, ok_codes=(0, 1)) or ""


def source_tags(project_dir: Path, argv: Sequence[str]) -> dict[str, str]:
    """MLflow's source tags and Hyrax's environment tags for a run launched in `project_dir` by `argv`."""
    values = {
        tags.SOURCE_NAME: _source_name(argv),
        tags.SOURCE_TYPE: "LOCAL",
        tags.USER: _user(),
        **_environment(),
    }
    state = git_state(project_dir)
    if state is not None:
        values[tags.GIT_COMMIT] = state.commit
        values[tags.GIT_DIRTY] = "true" if state.dirty else "false"
        if state.branch:
            values[tags.GIT_BRANCH] = state.branch
        if state.repo_url:
            values[tags.GIT_REPO_URL] = state.repo_url
    return {key: tags.clip_tag(value) for key, value in values.items()}


def _source_name(argv: Sequence[str]) -> str:
    """The program's name (`hyrax-run`), or the script's absolute path when it is a .py file."""
    if not argv or not argv[0]:
        return "unknown"
    if argv[0].endswith(".py"):
        return os.path.abspath(argv[0])
    return os.path.basename(argv[0]) or argv[0]


@functools.lru_cache(maxsize=1)
def _user() -> str:
    """The user running this process ("unknown" when the system cannot say)."""
    try:
        return getpass.getuser() or "unknown"
    except Exception:  # OSError/KeyError without a passwd entry (containers)
        return "unknown"


@functools.lru_cache(maxsize=1)
def _environment() -> dict[str, str]:
    """The tags that cannot change within a process: versions and host."""
    return {
        tags.HYRAX_VERSION: _distribution_version(DISTRIBUTION),
        tags.PYTHON_VERSION: platform.python_version(),
        **_torch_versions(),
        tags.HOST: socket.gethostname(),
    }


def _distribution_version(name: str) -> str:
    """The installed version of distribution `name`, or "unknown"."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _torch_versions() -> dict[str, str]:
    """torch's version and the CUDA version it was built with ("none" on a CPU build)."""
    try:
        import torch
    except ImportError:
        return {tags.TORCH_VERSION: "unknown", tags.CUDA_VERSION: "none"}
    return {tags.TORCH_VERSION: str(torch.__version__), tags.CUDA_VERSION: str(torch.version.cuda or "none")}


def normalize(name: str) -> str:
    """A distribution name as the package index compares them: lowercase, runs of `-_.` as `-`."""
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.lru_cache(maxsize=1)
def requirements() -> str:
    """The installed distributions as sorted `name==version` lines, like `pip freeze`."""
    seen: dict[str, str] = {}
    for dist in importlib.metadata.distributions():  # in sys.path order: the first one is what imports
        name = dist.metadata["Name"] if dist.metadata else None
        if name and normalize(name) not in seen:
            seen[normalize(name)] = f"{name}=={dist.version}"
    lines = sorted(seen.values(), key=str.lower)
    return "".join(f"{line}\n" for line in lines)


def _parse(text: str) -> dict[str, tuple[str, str]]:
    """`name==version` (or `name @ url`) lines as normalised name → (name as written, version)."""
    found: dict[str, tuple[str, str]] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        for sep in ("==", " @ "):
            if sep in line:
                name, version = (part.strip() for part in line.split(sep, 1))
                if name:
                    found[normalize(name)] = (name, version)
                break
    return found


def installed_versions() -> dict[str, str]:
    """The installed distributions: normalised name → version."""
    return {key: version for key, (_, version) in _parse(requirements()).items()}


def changed_packages(recorded: str, now: str | None = None) -> list[str]:
    """How the packages in `now` (default: installed) differ from a recorded requirements text, by name."""
    before, after = _parse(recorded), _parse(requirements() if now is None else now)
    changes = []
    for key in sorted(before.keys() | after.keys()):
        if key not in after:
            changes.append(f"{before[key][0]} (not installed now)")
        elif key not in before:
            changes.append(f"{after[key][0]} (not recorded)")
        elif before[key][1] != after[key][1]:
            changes.append(f"{after[key][0]} {before[key][1]} → {after[key][1]}")
    return changes


def environment_files(project_dir: Path, folder: Path, with_requirements: bool = True) -> list[Path]:
    """Write the run's environment files into `folder`: `requirements.txt` (when asked) and, when the
    project has uncommitted changes, `git_diff.patch` (secrets masked); returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    if with_requirements:
        path = folder / tags.REQUIREMENTS_FILE
        path.write_text(requirements())
        written.append(path)
    state = git_state(project_dir)
    if state is not None and state.dirty:
        path = folder / tags.GIT_DIFF_FILE
        path.write_text(redact(git_diff(state)))  # a password in a changed file stays out of MLflow
        written.append(path)
    return written
