"""Shared fixtures: a tiny synthetic cohort generated once per test session."""

import importlib
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO, REPO / "scripts"):  # the package, and the scripts' shared experiment runner (experiments.py)
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from apps.pacs.orthanc import free_port, stop_process_group  # noqa: E402,F401  (for the tests that start a server)


@pytest.fixture(autouse=True, scope="session")
def _own_inductor_cache(tmp_path_factory):
    """torch.compile's code cache of this session only: inductor's default cache is shared by all of the user's
    processes, also across ``ATEN_CPU_CAPABILITY`` / ``ONEDNN_MAX_CPU_ISA`` settings, and code compiled under
    another setting gives wrong results (``bundle.workflows.cpu.emulated_isa_cache_warning``)."""
    previous = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path_factory.mktemp("inductor"))
    yield
    if previous is None:
        del os.environ["TORCHINDUCTOR_CACHE_DIR"]
    else:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = previous


@pytest.fixture(autouse=True)
def _root_logging_restored():
    """A workflow run in-process applies configs/logging.conf, whose handler writes to that test's captured stdout;
    it is removed afterwards, so that a later test's log line is not written to a closed stream."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    """A 16-patient synthetic cohort (11 training / 2 validation / 3 test); returns its directory."""
    from bundle.synthetic.smwi_cohort import generate_cohort

    out = tmp_path_factory.mktemp("cohort") / "tiny"
    generate_cohort(out, n_patients=16, seed=3, num_workers=1, progress=False)
    return out


def bundle_env() -> dict[str, str]:
    """Environment for bundle subprocesses: repository importable, one thread per process."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def workflow_configs(workflow: str) -> list[str]:
    """The config files of a workflow as the README's commands give them (overlays on inference.json)."""
    from experiments import WORKFLOW_CONFIGS

    return [str(REPO / name) for name in WORKFLOW_CONFIGS[workflow]]


def require_extra(module: str, extra: str) -> ModuleType:
    """Import ``module`` of a pyproject extra. Missing: under CI (``.ci/run`` installs every extra and sets ``CI``)
    the test fails; elsewhere the module's tests are skipped with the install command as the reason."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        message = f"{module} not importable ({err}); install the '{extra}' extra (see docs/integrations.md)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message, allow_module_level=True)


def dciodvfy_errors(path: Path) -> list[str]:
    """The ``Error`` lines of David Clunie's IOD verifier (Debian's dicom3tools) on one DICOM file."""
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]
