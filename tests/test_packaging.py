"""The package finds its configs from a source checkout and from an installed (non-editable) wheel."""

import shutil
import subprocess
import sys
import zipfile

from conftest import REPO

from bundle.resources import bundle_root, config_path


def test_a_source_checkout_is_its_own_bundle_root():
    assert bundle_root() == REPO and config_path("inference.json") == REPO / "configs" / "inference.json"


def test_an_installed_wheel_ships_the_configs_and_finds_them(tmp_path):
    """Build a wheel (offline, from a copy: nothing is written into the checkout), install it into a folder and
    import it there with neither the checkout nor site-packages (the editable install) on ``sys.path``."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, source / name)
    for folder in ("bundle", "configs"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    done = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp_path),
                           str(source)], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {p.relative_to(REPO / "configs").as_posix() for p in (REPO / "configs").rglob("*") if p.is_file()}
    assert {f"bundle/bundle_data/configs/{name}" for name in configs} <= names
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "bundle").rglob("*.py")}
    assert modules <= names, f"modules missing from the wheel (pyproject.toml packages): {sorted(modules - names)}"

    target = tmp_path / "site"
    done = subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); from bundle import resources as r; "
        "print(r.__file__); print(r.bundle_root()); print(r.config_path('inference.json').is_file())"
    )
    done = subprocess.run([sys.executable, "-I", "-S", "-c", probe, str(target)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    module, root, found = done.stdout.split("\n")[:3]
    assert module.startswith(str(target)) and root == str(target.resolve() / "bundle" / "bundle_data")
    assert found == "True"
