# Sourced by benchmarks/load/run and benchmarks/load/soak: makes sure wrk and the
# benchmark venv exist, and sets LOAD_PY. Idempotent; does nothing when all is in place.
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"

if ! command -v wrk >/dev/null 2>&1; then
    echo "installing wrk (apt-get install -y wrk) ..." >&2
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    if ! { $SUDO apt-get install -y wrk >/dev/null 2>&1 || \
           { $SUDO apt-get update >/dev/null 2>&1 && $SUDO apt-get install -y wrk >/dev/null; }; }; then
        echo "could not install wrk; install it yourself (https://github.com/wg/wrk) and retry" >&2
        exit 1
    fi
fi

# The server and the driver run from their own venv: Warden from this checkout (editable,
# with the PostgreSQL driver) plus py-spy for profiling a worker under load. Set
# WARDEN_LOAD_PYTHON to use an existing interpreter instead (it needs warden[postgres]).
if [ -n "${WARDEN_LOAD_PYTHON:-}" ]; then
    LOAD_PY="$WARDEN_LOAD_PYTHON"
else
    VENV="$ROOT/.venv-load"
    if [ ! -x "$VENV/bin/python" ]; then
        echo "creating $VENV" >&2
        "${PYTHON:-python3}" -m venv "$VENV"
    fi
    REQS=(-e ".[postgres]" "py-spy")
    STAMP="$VENV/.load-installed-$(printf '%s\n' "${REQS[@]}" | cksum | cut -d' ' -f1)"
    if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
        echo "installing warden[postgres] + py-spy into $VENV ..." >&2
        LOG="$VENV/pip-install.log"
        if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${REQS[@]}" \
                >"$LOG" 2>&1; then
            cat "$LOG" >&2
            echo "pip install failed; see above" >&2
            exit 1
        fi
        touch "$STAMP"
    fi
    LOAD_PY="$VENV/bin/python"
fi
