"""The set-up scripts: one install step, shared by scripts/test.sh and scripts/dashboard.sh, that knows when it is done."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _project(tmp_path: Path) -> Path:
    """A copy of scripts/setup.sh in a project whose .venv's python only records how it was called."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    (tmp_path / "requirements.txt").write_text("duckdb==1\n")
    (tmp_path / "requirements-dev.txt").write_text("-r requirements.txt\npytest==1\n")
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\necho "$*" >> {tmp_path / "calls.log"}\n')
    python.chmod(0o755)
    return tmp_path


def _setup(project: Path, *args: str) -> tuple[list[str], str]:
    """Run setup.sh; the -r requirements files it installed, and what it said."""
    log = project / "calls.log"
    log.write_text("")
    done = subprocess.run(["bash", "scripts/setup.sh", *args], cwd=project, capture_output=True, text=True,
                          timeout=60, check=True)
    installed = [line.split(" -r ")[1] for line in log.read_text().splitlines() if " -r " in line]
    return installed, done.stderr


def test_the_dashboard_after_the_tests_installs_nothing(tmp_path: Path) -> None:
    project = _project(tmp_path)
    assert _setup(project, "--dev")[0] == ["requirements-dev.txt"]  # scripts/test.sh
    installed, said = _setup(project)  # scripts/dashboard.sh
    assert installed == [] and said == ""
    assert _setup(project, "--dev") == ([], "")


def test_the_tests_after_the_dashboard_install_the_dev_tools_once(tmp_path: Path) -> None:
    project = _project(tmp_path)
    assert _setup(project)[0] == ["requirements.txt"]
    assert _setup(project, "--dev")[0] == ["requirements-dev.txt"]
    assert _setup(project)[0] == [] and _setup(project, "--dev")[0] == []


def test_a_changed_requirement_installs_again(tmp_path: Path) -> None:
    project = _project(tmp_path)
    _setup(project, "--dev")
    (project / "requirements.txt").write_text("duckdb==2\n")
    installed, said = _setup(project)
    assert installed == ["requirements.txt"] and "installing requirements.txt" in said


def test_both_scripts_install_through_setup_sh() -> None:
    for script in ("test.sh", "dashboard.sh"):
        text = (ROOT / "scripts" / script).read_text()
        assert "bash scripts/setup.sh" in text and "pip install" not in text
