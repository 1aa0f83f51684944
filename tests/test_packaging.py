"""The built wheel is complete: installed on its own, ``warden demo`` runs.

The wheel is built offline with the build backend from this venv (its PEP 517 hook), then
installed with ``--no-deps`` into a fresh venv that borrows only the third-party packages of
this one, never its editable checkout of warden: the demo must run from the wheel's files.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("hatchling", reason="the dev extras install hatchling (pip install -e .[dev])")


def _run(args: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    name = _run(
        [sys.executable, "-c", f"import hatchling.build as b; print(b.build_wheel({str(out)!r}))"],
        cwd=ROOT,
    ).strip().splitlines()[-1]
    return out / name


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed: returns its bin directory."""
    home = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=True).create(home)
    bin_dir = home / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / "python"
    _run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", wheel], cwd=home)
    # Dependencies come from this venv's site-packages, added as a plain path: a .pth line
    # is not itself a site dir, so this venv's editable-install hook (the checkout's src/)
    # is not processed and cannot stand in for the wheel.
    site = _run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=home
    ).strip()
    Path(site, "zz_dev_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return bin_dir


def test_the_wheel_carries_the_demo_example(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    example = "warden/examples/refund_triage/"
    for needed in (
        "workflow.yaml",
        "agent.py",
        "approver.py",
        "helpdesk.py",
        "policy_tests/refunds.yaml",
    ):
        assert example + needed in names
    assert "warden/py.typed" in names


def test_the_wheel_carries_the_consoles_templates_and_static_files(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    ui = "warden/server/ui/"
    for needed in (
        "templates/base.html",
        "templates/approvals.html",
        "templates/report.html",
        "static/htmx.min.js",
        "static/htmx.LICENSE",
        "static/console.css",
        "static/console.js",
    ):
        assert ui + needed in names


def test_warden_demo_runs_from_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env["PATH"] = f"{installed}{os.pathsep}{env.get('PATH', '')}"
    where = _run(
        [installed / "python", "-c", "import warden, warden.demo as d; print(warden.__file__); "
         "print(d.example_dir())"],
        cwd=tmp_path,
        env=env,
    ).splitlines()
    package_dir = Path(where[0]).parent
    assert installed.parent in package_dir.parents
    assert Path(where[1]) == package_dir / "examples" / "refund_triage"

    out = _run(
        [installed / "warden", "demo", "--tickets", "30", "--quiet",
         "--store", f"sqlite:///{tmp_path / 'demo.db'}"],
        cwd=tmp_path,
        env=env,
    )
    assert "chain intact" in out
