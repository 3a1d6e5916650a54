"""Provenance, system metrics and the data set record, against real git repositories and MLflow stores."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import subprocess
import time
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient
from torch.utils.data import TensorDataset

from hyrax import dataset_record, provenance, system_metrics, tags


@pytest.fixture(autouse=True)
def git_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Git without the machine's configuration, an author, and no repository above the test's directory."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    for role in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{role}_NAME", "Test")
        monkeypatch.setenv(f"GIT_{role}_EMAIL", "test@example.com")


def git(cwd: Path, *args: str) -> str:
    """Run git in `cwd` and return its output."""
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with one commit on `main`: train.py, a .gitignore that ignores *.log, and a sub dir."""
    root = tmp_path / "project"
    (root / "sub").mkdir(parents=True)
    git(root, "-c", "init.defaultBranch=main", "init", "-q")
    (root / "train.py").write_text("lr = 0.1\nepochs = 3\n")
    (root / ".gitignore").write_text("*.log\n")
    (root / "sub" / "keep.txt").write_text("kept\n")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "first")
    return root


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> tuple[MlflowClient, str]:
    """A real SQLite MLflow store (one for the module: creating one takes seconds) and its URI."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db"
    store = MlflowClient(tracking_uri=uri)
    store.search_experiments(max_results=1)
    return store, uri


def new_run(client: tuple[MlflowClient, str]) -> str:
    """A new RUNNING run in the store's default experiment."""
    return client[0].create_run("0").info.run_id


# --- git state and diff ---


def test_git_state_of_a_clean_repository_found_from_a_sub_directory(repo: Path) -> None:
    state = provenance.git_state(repo / "sub")
    assert state is not None
    assert state.commit == git(repo, "rev-parse", "HEAD").strip()
    assert (state.branch, state.dirty, state.repo_url) == ("main", False, None)
    assert state.root == repo.resolve()


def test_git_state_turns_dirty_on_an_edit_or_an_untracked_file_but_not_an_ignored_one(repo: Path) -> None:
    (repo / "run.log").write_text("ignored\n")
    assert provenance.git_state(repo).dirty is False
    (repo / "notes.md").write_text("new\n")
    assert provenance.git_state(repo).dirty is True
    (repo / "notes.md").unlink()
    (repo / "train.py").write_text("lr = 0.2\nepochs = 3\n")
    assert provenance.git_state(repo).dirty is True


def test_git_state_of_a_detached_head_has_no_branch(repo: Path) -> None:
    git(repo, "checkout", "-q", "--detach")
    state = provenance.git_state(repo)
    assert state.branch is None
    assert state.commit == git(repo, "rev-parse", "HEAD").strip()


def test_git_state_masks_the_password_in_the_remote_url(repo: Path) -> None:
    git(repo, "remote", "add", "origin", "https://alice:s3cret@git.example.com/team/project.git")
    state = provenance.git_state(repo)
    assert state.repo_url == "https://alice:***@git.example.com/team/project.git"


def test_no_git_state_outside_a_repository_without_commits_or_without_git(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    assert provenance.git_state(plain) is None
    assert provenance.git_state(tmp_path / "missing") is None
    git(plain, "init", "-q")
    assert provenance.git_state(plain) is None  # no commits yet
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert provenance.git_state(plain) is None


def test_git_diff_holds_the_changes_and_applies_to_a_clean_checkout(repo: Path, tmp_path: Path) -> None:
    assert provenance.git_diff(provenance.git_state(repo)) == ""
    (repo / "train.py").write_text("lr = 0.2\nepochs = 3\n")
    (repo / "sub" / "keep.txt").write_text("kept\nstaged line\n")
    git(repo, "add", "sub/keep.txt")
    (repo / "sub" / "helper.py").write_text("def helper():\n    return 42\n")
    (repo / "weights.bin").write_bytes(b"\0\1\2" * 10)
    (repo / "run.log").write_text("ignored\n")

    patch = provenance.git_diff(provenance.git_state(repo))
    assert "+lr = 0.2" in patch and "+staged line" in patch
    assert "sub/helper.py" in patch and "+    return 42" in patch
    assert "weights.bin  (contents not included)" in patch
    assert "run.log" not in patch

    copy = tmp_path / "copy"
    git(tmp_path, "clone", "-q", str(repo), str(copy))
    (tmp_path / "changes.patch").write_text(patch)
    git(copy, "apply", str(tmp_path / "changes.patch"))
    for name in ("train.py", "sub/keep.txt", "sub/helper.py"):
        assert (copy / name).read_text() == (repo / name).read_text()


# --- source tags and packages ---

ENVIRONMENT_KEYS = {
    tags.SOURCE_NAME,
    tags.SOURCE_TYPE,
    tags.USER,
    tags.HYRAX_VERSION,
    tags.PYTHON_VERSION,
    tags.TORCH_VERSION,
    tags.CUDA_VERSION,
    tags.HOST,
}


def test_source_tags_in_a_repository_on_a_branch(repo: Path) -> None:
    found = provenance.source_tags(repo, ["/venv/bin/hyrax-run", "model=mlp", "train.epochs=3"])
    assert set(found) == ENVIRONMENT_KEYS | {tags.GIT_COMMIT, tags.GIT_BRANCH, tags.GIT_DIRTY}
    assert found[tags.SOURCE_NAME] == "hyrax-run"
    assert found[tags.SOURCE_TYPE] == "LOCAL"
    assert found[tags.GIT_COMMIT] == git(repo, "rev-parse", "HEAD").strip()
    assert (found[tags.GIT_BRANCH], found[tags.GIT_DIRTY]) == ("main", "false")
    assert found[tags.TORCH_VERSION] == torch.__version__
    assert found[tags.HYRAX_VERSION] == importlib.metadata.version("hyrax-runner")
    assert all(isinstance(v, str) and v for v in found.values())


def test_source_tags_detached_with_a_remote_dirty_and_fast(repo: Path) -> None:
    git(repo, "remote", "add", "origin", "https://git.example.com/team/project.git")
    git(repo, "checkout", "-q", "--detach")
    (repo / "train.py").write_text("changed\n")
    provenance.source_tags(repo, ["train.py"])  # the first call may import torch
    started = time.perf_counter()
    found = provenance.source_tags(repo, ["train.py"])
    assert time.perf_counter() - started < 0.2
    assert set(found) == ENVIRONMENT_KEYS | {tags.GIT_COMMIT, tags.GIT_REPO_URL, tags.GIT_DIRTY}
    assert found[tags.GIT_REPO_URL] == "https://git.example.com/team/project.git"
    assert found[tags.GIT_DIRTY] == "true"
    assert found[tags.SOURCE_NAME] == str(Path("train.py").resolve())


def test_source_tags_outside_a_repository_have_no_git_tags(tmp_path: Path) -> None:
    assert set(provenance.source_tags(tmp_path, ["hyrax-run"])) == ENVIRONMENT_KEYS


def test_requirements_lists_the_installed_distributions_like_pip_freeze() -> None:
    text = provenance.requirements()
    lines = text.splitlines()
    assert text.endswith("\n")
    assert f"mlflow=={importlib.metadata.version('mlflow')}" in lines
    assert lines == sorted(lines, key=str.lower)
    names = [provenance.normalize(line.split("==")[0]) for line in lines]
    assert len(names) == len(set(names))
    assert provenance.installed_versions()["mlflow"] == mlflow.__version__


def test_changed_packages_names_changed_missing_and_new_packages() -> None:
    recorded = "Foo_Bar==1.0\nnumpy==1.26.0\ntorch==2.13.0\n"
    now = "foo-bar==1.0\nnewpkg==0.1\ntorch==2.14.0\n"
    assert provenance.changed_packages(recorded, now) == [
        "newpkg (not recorded)",
        "numpy (not installed now)",
        "torch 2.13.0 → 2.14.0",
    ]
    assert provenance.changed_packages(provenance.requirements()) == []


# --- system metrics ---


def metric_keys(store: MlflowClient, run_id: str) -> set[str]:
    """The names of the metrics logged to a run."""
    return set(store.get_run(run_id).data.metrics)


def test_system_metrics_reach_the_run_store_within_seconds(
    client: tuple[MlflowClient, str], monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
    store, uri = client
    global_uri = mlflow.get_tracking_uri()
    run_id = new_run(client)
    monitor = system_metrics.start(run_id, uri)
    assert monitor is not None
    wanted = {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"}
    deadline = time.monotonic() + 10
    while not wanted <= metric_keys(store, run_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    monitor.stop()
    monitor.stop()
    assert wanted <= metric_keys(store, run_id)
    assert mlflow.get_tracking_uri() == global_uri
    out, err = capfd.readouterr()
    assert out == ""
    assert "monitoring system metrics" not in err


def test_a_run_shorter_than_one_interval_still_gets_each_metric(
    client: tuple[MlflowClient, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "30")
    store, uri = client
    run_id = new_run(client)
    monitor = system_metrics.start(run_id, uri)
    started = time.monotonic()
    monitor.stop()
    assert time.monotonic() - started < 5
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_percentage"} <= metric_keys(
        store, run_id
    )
    system_metrics.start(run_id, uri, resume=True).stop()  # a resumed run goes on after the last step
    history = store.get_metric_history(run_id, "system/cpu_utilization_percentage")
    assert sorted(m.step for m in history) == [0, 1]


# --- the data set record ---


def tensor_data(n: int = 12) -> TensorDataset:
    """A small real data set: n items of 3 features and an integer label."""
    return TensorDataset(torch.randn(n, 3), torch.arange(n))


CONFIG = {"_target_": "torch.utils.data.TensorDataset", "path": "/data/train.npz", "seed": 0}


def test_log_dataset_records_the_data_set_as_the_run_input(client: tuple[MlflowClient, str]) -> None:
    store, _ = client
    run_id = new_run(client)
    dataset_record.log_dataset(store, run_id, tensor_data(), CONFIG, {"train": 9, "validate": 0, "test": 3})
    (recorded,) = store.get_run(run_id).inputs.dataset_inputs
    data = recorded.dataset
    assert data.name == "TensorDataset"
    assert len(data.digest) == dataset_record.DIGEST_CHARS
    assert json.loads(data.profile) == {"num_rows": 12, "splits": {"train": 9, "validate": 0, "test": 3}}
    assert json.loads(data.source) == {"class": CONFIG["_target_"], "location": "/data/train.npz"}
    assert json.loads(data.schema)["item"]["items"][0] == {
        "type": "Tensor",
        "dtype": "torch.float32",
        "shape": [3],
    }
    assert {t.key: t.value for t in recorded.tags}["mlflow.data.context"] == "training"


def test_the_digest_is_stable_and_follows_the_config_and_size() -> None:
    def digest(data: TensorDataset, config: dict) -> str:
        return dataset_record.dataset_input(data, config, {"train": 12}).dataset.digest

    first = digest(tensor_data(), CONFIG)
    assert digest(tensor_data(), dict(reversed(CONFIG.items()))) == first
    assert digest(tensor_data(), {**CONFIG, "seed": 1}) != first
    assert digest(tensor_data(13), CONFIG) != first


def test_a_data_set_that_cannot_be_recorded_is_a_warning(
    client: tuple[MlflowClient, str], caplog: pytest.LogCaptureFixture
) -> None:
    class NoLength:
        def __iter__(self):
            return iter(range(3))

    with caplog.at_level(logging.WARNING, logger="hyrax"):
        dataset_record.log_dataset(client[0], "no-such-run", NoLength(), {}, {"train": 3})
    assert "could not record the data set" in caplog.text
    recorded = dataset_record.dataset_input(NoLength(), {}, {"train": 3}).dataset
    assert json.loads(recorded.profile) == {"splits": {"train": 3}}
    assert json.loads(recorded.source)["class"].endswith("NoLength")
