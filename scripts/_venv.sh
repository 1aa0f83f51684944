# Sourced by scripts/demo and scripts/test: create or reuse .venv and install what is needed.
# Reinstalls only when pyproject.toml changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
ensure_installed() {  # $1: pip target, e.g. ".[dev]"
    local stamp=".venv/.warden-installed-$(echo "$1" | tr -c 'a-z' '_')"
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        echo "installing $1 into .venv ..." >&2
        local log=.venv/pip-install.log
        if ! .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$1" >"$log" 2>&1; then
            cat "$log" >&2
            echo "pip install failed; see above" >&2
            exit 1
        fi
        touch "$stamp"
    fi
}
