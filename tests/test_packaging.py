"""``pip install .`` installs one top-level package, ``genppl``, that a user's own ``models/``
folder cannot shadow (issue 10)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh venv (seeing this interpreter's packages, pip and setuptools included) with the
    project installed from a wheel: ``pip install --no-deps .``"""
    where = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    before = set(os.listdir(site))
    # a copy of the sources: pip builds in place, and a stale build/ would leak into the wheel
    source = tmp_path_factory.mktemp("source") / "genppl"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__"))
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-cache-dir", str(source)], check=True,
                   env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    return python, site, set(os.listdir(site)) - before


def test_installs_exactly_one_top_level_package(venv):
    _, site, added = venv
    packages = {name for name in added if not name.endswith((".dist-info", ".pth")) and name != "__pycache__"}
    assert packages == {"genppl"}, f"installed at top level: {sorted(added)}"
    # every subpackage of the source tree made it into the wheel
    for init in ROOT.glob("*/**/__init__.py"):
        top = init.relative_to(ROOT).parts[0]
        if top in ("models", "ppl", "inference", "circuits", "tasks", "cli"):
            sub = init.parent.relative_to(ROOT)
            assert (site / "genppl" / sub / "__init__.py").exists(), f"{sub} missing from the wheel"
    assert (site / "genppl" / "models" / "bundled" / "model.safetensors").exists()


def test_a_users_own_models_folder_does_not_shadow_ours(venv, tmp_path):
    python, site, _ = venv
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("raise ImportError('the user models package')\n")
    code = ("import genppl, models; from genppl import models as ours, ppl, inference, circuits;"
            "assert 'site-packages' in ours.__file__, ours.__file__;"
            "lm = ours.load(); print(lm.vocab_size)")
    out = subprocess.run([python, "-c", code.replace("import genppl, models;", "import genppl;")],
                         cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) > 0
