#!/usr/bin/env bash
# Install Synapse from PyPI into its own virtualenv, so its dependency pins never clash with the hub's.
# Idempotent: does nothing when the venv already imports synapse.
# Usage: scripts/install-synapse.sh            (venv at <repo>/.cache/synapse-venv)
#        SYNAPSE_VENV=/path scripts/install-synapse.sh
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SYNAPSE_VENV:-$repo_root/.cache/synapse-venv}"
python_bin="${PYTHON:-python3}"
spec="${SYNAPSE_SPEC:-matrix-synapse}"

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import synapse.app.homeserver" >/dev/null 2>&1; then
    echo "synapse already installed in $venv ($("$venv/bin/python" -c 'import synapse; print(synapse.__version__)'))"
    exit 0
fi

mkdir -p "$(dirname "$venv")"
if [ ! -x "$venv/bin/python" ]; then
    "$python_bin" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "$spec"
"$venv/bin/python" -c "import synapse.app.homeserver, synapse; print('synapse', synapse.__version__, 'installed in $venv')"
