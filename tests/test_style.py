"""The code base stays ruff-clean (part of the one test command CI runs)."""

import shutil
import subprocess

import pytest
from conftest import REPO


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is installed with the 'test' extra")
def test_ruff_clean():
    result = subprocess.run(["ruff", "check", "."], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:]


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is installed with the 'test' extra")
def test_ruff_formatted():
    command = ["ruff", "format", "--check", "apps", "bundle", "scripts", "tests"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:]
