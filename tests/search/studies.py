"""What sweeps leave behind: `open_study` reads a study back (journal file or RDB URL), `sweep_files`
lists the study storage and `multirun.yaml` files a sweep created.

Inside tests/search: `from studies import open_study`; elsewhere in tests/: `from search.studies import
open_study` (tests/ is on the path, tests/search is a namespace package).
"""

from __future__ import annotations

import os
from pathlib import Path

import optuna

from hyrax.search.storage import JOURNAL_FILE, open_storage


def open_study(path_or_url: str | os.PathLike, name: str | None = None) -> optuna.Study:
    """The study in a journal file (a path) or an RDB URL such as `sqlite:///study.db`.

    Without `name`, the storage must hold exactly one study, and that one is opened. A journal file
    must exist: reading one never creates it.
    """
    spec = str(path_or_url)
    if "://" not in spec:
        assert Path(spec).is_file(), f"no journal file {spec}"
    storage = open_storage(spec)
    if name is None:
        [summary] = optuna.get_all_study_summaries(storage)
        name = summary.study_name
    return optuna.load_study(study_name=name, storage=storage)


def sweep_files(where: Path) -> list[Path]:
    """The study storage files (journal, SQLite) and `multirun.yaml` files anywhere under `where`.

    MLflow's `mlflow.db` is not one of them.
    """
    names = (JOURNAL_FILE, "*.db", "multirun.yaml")
    return sorted(p for name in names for p in where.rglob(name) if p.name != "mlflow.db")
