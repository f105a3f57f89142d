"""modelzoos installed as a user installs it: the wheel built from this checkout, installed into a fresh virtual
environment, runs `modelzoos build` and `push` (to the fake Hub over real HTTP) from there, away from the source
tree. The large dependencies come from the running environment through a .pth file (offline; no download)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from fakehub import FAKE_TOKEN, serve

ROOT = Path(__file__).resolve().parent.parent


def run(*cmd, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=900, **kwargs)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel of this checkout installed (no editable install, no source tree).

    The wheel is built from a copy of the sources, so that stale files in the checkout's ``build/`` cannot slip
    into it; pip runs from the outer environment (``--python``), so the venv needs no pip of its own.
    """
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "demo", "results"))
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", tmp / "dist", src)
    wheel = next((tmp / "dist").glob("modelzoos-*.whl"))
    env = tmp / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", env)
    python = env / "bin" / "python"
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    Path(site, "outer_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch, datasets, ...
    # --ignore-installed: the outer environment's (editable) modelzoos is visible through the .pth file
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "--ignore-installed",
        "--quiet", wheel)
    return env


def clean_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of a user's shell: no PYTHONPATH to a source tree, an empty Hugging Face home."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_ENDPOINT", "HF_TOKEN")}
    return env | {"HF_HOME": str(tmp / "hf"), "HF_HUB_DISABLE_XET": "1", **extra}


def test_the_installed_wheel_builds_and_pushes(venv, zoo_dir, twin_dirs, tmp_path):
    env = clean_env(tmp_path)
    bin_ = venv / "bin"
    where = run(bin_ / "python", "-c", "import modelzoos, modelzoos.card as c; print(modelzoos.__file__); "
                "print(sorted(p.name for p in c.CARDS.iterdir()))", cwd=tmp_path, env=env).stdout
    assert str(venv) in where and str(ROOT) not in where  # the installed copy, not this checkout
    assert "body.md.tmpl" in where and "config_section.md.tmpl" in where  # the card templates are package data
    assert run(bin_ / "modelzoos", "--version", cwd=tmp_path, env=env).stdout.startswith("modelzoos 0.")
    repo = tmp_path / "repo"
    built = run(bin_ / "modelzoos", "build", zoo_dir.path, twin_dirs["vd"].path, "--repo", repo, "--quiet",
                cwd=tmp_path, env=env)
    assert "built digits_cnn_seed, digits_cnn_seed_sparse_vd" in built.stdout
    assert (repo / "README.md").is_file()
    run(bin_ / "modelzoos", "verify", repo, cwd=tmp_path, env=env)
    with serve() as hub:
        pushed = run(bin_ / "modelzoos", "push", repo, "--repo-id", "org/wheel", cwd=tmp_path,
                     env=clean_env(tmp_path, HF_ENDPOINT=hub.endpoint, HF_TOKEN=FAKE_TOKEN))
        remote = hub.files("org/wheel")
    assert "pushed 2 config(s) to org/wheel" in pushed.stdout
    local = {p.relative_to(repo).as_posix(): p.read_bytes() for p in (repo / "data").rglob("*") if p.is_file()}
    assert {p: b for p, b in remote.items() if p.startswith("data/")} == local
    assert b"org/wheel" in remote["README.md"]
