"""A crash in the user's own code shows their frames, even in a project folder called `hyrax` or `hydra`."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from hyraxtest import run_hyrax

from hyrax.report import hidden_locations, print_user_traceback

MODEL = '''
import torch


class Boom(Exception):
    """The user's own error."""


class Exploding(torch.nn.Module):
    def __init__(self, width: int = 4):
        super().__init__()
        self.layer = torch.nn.Linear(width, 2)
        raise Boom("the user's model failed while it was built")
'''


def _project(root: Path, folder: str) -> Path:
    """A user's project checked out in a folder named `folder`, holding the package `mypkg`."""
    package = root / folder / "mypkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(MODEL)
    return root / folder


@pytest.mark.parametrize("folder", ["hyrax", "hydra", "hydra_plugins"])
def test_frames_of_user_code_in_a_folder_named_like_ours_are_shown(
    folder: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _project(tmp_path, folder) / "mypkg" / "models.py"
    spec = importlib.util.spec_from_file_location(f"user_models_{folder}", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(module.Boom) as caught:
        module.Exploding()
    print_user_traceback(caught.value)
    err = capsys.readouterr().err
    assert f'{source}", line 13, in __init__' in err, err
    assert "Boom: the user's model failed while it was built" in err


def test_frames_of_the_installed_packages_are_hidden(capsys: pytest.CaptureFixture[str]) -> None:
    from hyrax.config import builtin_dir

    with pytest.raises(TypeError) as caught:
        builtin_dir(123)  # type: ignore[arg-type]
    print_user_traceback(caught.value)
    err = capsys.readouterr().err
    assert "hyrax/config.py" not in err and "builtin_dir(123)" in err and "TypeError" in err, err
    hyrax_dir = Path(sys.modules["hyrax"].__file__).resolve().parent
    assert hyrax_dir in hidden_locations()


@pytest.mark.slow
@pytest.mark.parametrize("folder", ["hyrax", "hydra"])
def test_hyrax_run_shows_the_users_frames_from_such_a_folder(folder: str, tmp_path: Path) -> None:
    project = _project(tmp_path, folder)
    proc = run_hyrax(["model=mypkg.models.Exploding", "train.epochs=1"], project)
    assert proc.returncode == 1, proc.stderr
    assert "mypkg/models.py" in proc.stderr and "in __init__" in proc.stderr, proc.stderr
    assert "Boom: the user's model failed while it was built" in proc.stderr
    assert "hyrax/train/" not in proc.stderr and "site-packages/hydra/" not in proc.stderr, proc.stderr
