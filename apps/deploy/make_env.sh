#!/usr/bin/env bash
# Make the MONAI Deploy app's environment: a virtual environment that sees this Python's packages (torch, the
# bundle) and adds the pyproject "deploy" extra with --no-deps (its full dependency tree would pull CUDA wheels).
# Usage: bash apps/deploy/make_env.sh [venv folder, default .venv-deploy]; then .venv-deploy/bin/python -m apps.deploy
set -euo pipefail
cd "$(dirname "$0")/../.."
venv="${1:-.venv-deploy}"
python -m venv --system-site-packages "$venv"
pins=$(python -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['deploy']))")
# shellcheck disable=SC2086
"$venv/bin/python" -m pip install --quiet --no-deps --ignore-installed $pins
"$venv/bin/python" -c "import monai.deploy, highdicom; print('MONAI Deploy App SDK environment ready:', '$venv')"
