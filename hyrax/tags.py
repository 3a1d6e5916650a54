"""The names of the MLflow tags Hyrax writes and reads, and the size limits of what it logs.

Every module that sets or searches a tag takes its name from here, so a run written by one part of
Hyrax (a job, the sweep process, a later `hyrax-run`) is found by the others.
"""

from __future__ import annotations

# MLflow's own tags, shown by its UI: the parent of a sweep's child run, the run's description
# (markdown), where it came from and who ran it.
PARENT_RUN_ID = "mlflow.parentRunId"
NOTE = "mlflow.note.content"
SOURCE_NAME = "mlflow.source.name"
SOURCE_TYPE = "mlflow.source.type"
USER = "mlflow.user"
GIT_COMMIT = "mlflow.source.git.commit"
GIT_BRANCH = "mlflow.source.git.branch"
GIT_REPO_URL = "mlflow.source.git.repoURL"
# An experiment tag: which view the UI opens an experiment in (its runs, not the GenAI overview).
EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND_TRAINING = "custom_model_development"

# Every training run.
MODEL = "hyrax.model"
DATA_SET = "hyrax.data_set"
RUN_DIR = "hyrax.run_dir"
ERROR = "hyrax.error"  # why a run FAILED: the error's type and message
RANKS = "hyrax.ranks"  # how many data-parallel ranks trained the run (train.devices, or Slurm tasks)
COMMAND = "hyrax.command"  # the command line that started the run (or its sweep)
OBJECTIVE_METRIC = "hyrax.objective.metric"  # what the run returns to a sweeper ...
OBJECTIVE_DIRECTION = "hyrax.objective.direction"  # ... and whether lower or higher is better
FROM_RUN = "hyrax.from_run"  # the run this one re-ran or forked (from_run=<id>)
DEBUG = "hyrax.debug"  # a debug run (debug=fast|overfit|profile, train.limit_batches, ...): what it changed

# Provenance of every run (and of a sweep's parent): the user's project and the environment.
GIT_DIRTY = "hyrax.git.dirty"  # "true" when the project had uncommitted changes (diff: GIT_DIFF_FILE)
HYRAX_VERSION = "hyrax.version"
PYTHON_VERSION = "hyrax.python"
TORCH_VERSION = "hyrax.torch"
CUDA_VERSION = "hyrax.cuda"  # "none" on a CPU build
HOST = "hyrax.host"
SPLITS = "hyrax.splits"  # a tag on the run's data set input: this run's split sizes (JSON)
REQUIREMENTS_FILE = "requirements.txt"  # artifact: installed packages (a sweep logs it once, on its parent)
GIT_DIFF_FILE = "git_diff.patch"  # artifact: the uncommitted changes, when there are any

# A sweep's child runs.
OVERRIDES = "hyrax.overrides"  # the job's own overrides (what it sweeps)
TRIAL_NUMBER = "hyrax.trial_number"
TRIAL_STATE = "hyrax.trial_state"  # PRUNED, set by the job when its trial is pruned
OPTUNA_STATE = "hyrax.optuna_state"  # the state the sweeper told Optuna: COMPLETE, PRUNED, FAIL

# A sweep's parent run.
KIND = "hyrax.kind"
KIND_SWEEP = "sweep"
SWEEP_DIR = "hyrax.sweep_dir"
SWEEPER = "hyrax.sweeper"
LAUNCHER = "hyrax.launcher"
BEST_RUN_ID = "hyrax.best_run_id"
BEST = "hyrax.best"  # "true" on the sweep's best child run
BEST_OVERRIDES = "hyrax.best_overrides"
N_CHILDREN = "hyrax.n_children"
STOPPED_BECAUSE = "hyrax.stopped_because"  # why the Optuna sweep stopped asking for trials
# ... and its metrics: compute the trials used (sum of their wall times) and the sweep's wall time.
TRIAL_SECONDS = "trial_seconds"
WALL_SECONDS = "wall_seconds"

# MLflow's limits: values longer than these are cut, batches larger are split.
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 5000
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100


def clip_tag(value: object) -> str:
    """A tag value as MLflow stores it: a string of at most `MAX_TAG_LENGTH` characters."""
    return str(value)[:MAX_TAG_LENGTH]
