"""The descriptions (MLflow's run notes, markdown) that explain a run to someone reading it later:
the command that made it, where its files are, what its objective is and how the sweep went.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from hyrax.tags import MAX_TAG_LENGTH
from hyrax.ui_links import run_path

PROGRAM = "hyrax-run"
COMMAND_ENV = "HYRAX_COMMAND"  # the command line as the user typed it (a config file, from_run unexpanded)


def remember_command(args: Sequence[str]) -> None:
    """Keep the command line as typed, for the runs it starts (jobs in other processes inherit it)."""
    os.environ[COMMAND_ENV] = shlex.join([PROGRAM, *args])


def typed_command() -> tuple[str, list[str]] | None:
    """The command line as typed and its overrides (`key=value` arguments), when `hyrax-run` started us."""
    typed = os.environ.get(COMMAND_ENV)
    if not typed:
        return None
    words = shlex.split(typed)[1:]
    return typed, [w for w in words if "=" in w and not w.startswith("-")]


def command_line(overrides: Sequence[str], multirun: bool = False) -> str:
    """`hyrax-run [-m] <overrides>`, each override quoted as a shell needs it."""
    return " ".join([PROGRAM, *(["-m"] if multirun else []), *(shlex.quote(o) for o in overrides)])


def objective_words(metric: Any, direction: Any) -> str:
    """`val/loss (minimize)`, or the list of them for several objectives."""
    metrics = [metric] if isinstance(metric, str) else list(metric)
    directions = [direction] * len(metrics) if isinstance(direction, str) else list(direction)
    return ", ".join(f"{m} ({d})" for m, d in zip(metrics, directions, strict=False))


def run_note(
    command: str,
    run_dir: str,
    objective: str,
    parent: tuple[str, str, str] | None = None,
    result: str | None = None,
) -> str:
    """A training run's description. `parent` is (experiment id, run id, name) of its sweep."""
    lines = []
    if parent is not None:
        lines.append(f"A trial of the sweep [{parent[2]}]({run_path(parent[0], parent[1])}).\n")
    lines += [
        f"**Command:** `{command}`\n",
        f"**Run directory:** `{run_dir}`\n",
        f"**Objective:** {objective}: the value at the best epoch, whose weights the best checkpoint "
        "holds (the metric's chart shows every epoch; `best_epoch` says which one).\n",
    ]
    if result:
        lines.append(f"**Result:** {result}\n")
    return "\n".join(lines)


def result_words(objective: float | list[float], best_epoch: int, epochs: int, status: str) -> str:
    """`objective 0.1234 at epoch 7 of 10`."""
    values = [objective] if isinstance(objective, float) else list(objective)
    shown = ", ".join(f"{v:.6g}" for v in values)
    return f"objective {shown} at epoch {best_epoch + 1} of {epochs} ({status})"


def sweep_note(
    command: str,
    objective: str,
    experiment_id: str,
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    best: Mapping[str, Any] | None,
) -> str:
    """A sweep's description: the command, the best trial (linked) and a table of trials, best first.

    Rows hold `run_id`, `name`, `objective`, `state` and the `columns` (the parameters that vary);
    the table stops before the note outgrows MLflow's limit (`trials.csv` has every trial).
    """
    head = [f"**Command:** `{command}`\n", f"**Objective:** {objective}\n"]
    if best is not None:
        link = f"[{best['name']}]({run_path(experiment_id, best['run_id'])})"
        head.append(f"**Best trial:** {link}: objective {_number(best['objective'])}\n")
    head.append(f"**Trials** ({len(rows)}, best first; all in `trials.csv`, plots in `report.html`):\n")
    table = [
        "| run | objective | " + " | ".join(columns) + " | state |",
        "|---|---|" + "---|" * len(columns) + "---|",
    ]
    text = "\n".join(head) + "\n" + "\n".join(table)
    for shown, row in enumerate(rows):
        cells = [str(row.get(c, "")) for c in columns]
        line = (
            f"\n| [{row['name']}]({run_path(experiment_id, row['run_id'])}) | {_number(row['objective'])} | "
            + " | ".join(cells)
            + f" | {row['state']} |"
        )
        if len(text) + len(line) > MAX_TAG_LENGTH - 80:
            return text + f"\n\n… and {len(rows) - shown} more in `trials.csv`."
        text += line
    return text


def _number(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else ("" if value is None else str(value))
