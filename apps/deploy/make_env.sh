#!/usr/bin/env bash
# Make the MONAI Deploy app's environment: a virtual environment that sees this Python's packages (torch, the
# bundle) and adds the pyproject "deploy" extra with --no-deps (its full dependency tree would pull CUDA wheels).
# Works from the system Python and from inside a virtual environment: `python -m venv --system-site-packages` run
# from a venv exposes the *base* interpreter's packages, not the venv's, so the venv's own site-packages are added
# to the new environment with a .pth file (after its own, so the deploy pins win).
# Usage: bash apps/deploy/make_env.sh [venv folder, default .venv-deploy]; then .venv-deploy/bin/python -m apps.deploy
set -euo pipefail
cd "$(dirname "$0")/../.."
venv="${1:-.venv-deploy}"
python -m venv --system-site-packages "$venv"
parent_sites=$(python -c "import sys, site; print(' '.join(site.getsitepackages()) if sys.prefix != sys.base_prefix else '')")
if [ -n "$parent_sites" ]; then
    own_site=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    {
        echo "# the packages of the virtual environment this one was made from (apps/deploy/make_env.sh)"
        for dir in $parent_sites; do echo "import site; site.addsitedir('$dir')"; done
    } > "$own_site/zz_parent_venv.pth"
fi
pins=$(python -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['deploy']))")
# shellcheck disable=SC2086
"$venv/bin/python" -m pip install --quiet --no-deps --ignore-installed $pins
"$venv/bin/python" -c "import monai.deploy, highdicom, torch, bundle; print('MONAI Deploy App SDK environment ready:', '$venv')"
