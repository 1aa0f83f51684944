# Sourced by benchmarks/run and benchmarks/compare: create or reuse .venv-bench with Warden
# (editable) and the peers (benchmark env only), and set BENCH_PY. Expects ROOT, and the
# current directory to be the repository root.
PY="${PYTHON:-python3}"
VENV=.venv-bench
if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV" >&2
    "$PY" -m venv "$VENV"
fi
# Warden with its PostgreSQL driver (for the optional PostgreSQL rows), AGT's policy
# engine (the [core] extra) and the CEL library. Reinstalls only when pyproject.toml or
# this list changed since the last install.
REQS=(-e ".[postgres]" "agent-governance-toolkit[core]" "common-expression-language")
STAMP="$VENV/.bench-installed-$(printf '%s\n' "${REQS[@]}" | cksum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
    echo "installing warden + peers into $VENV ..." >&2
    LOG="$VENV/pip-install.log"
    if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${REQS[@]}" \
            >"$LOG" 2>&1; then
        cat "$LOG" >&2
        echo "pip install failed; see above" >&2
        exit 1
    fi
    touch "$STAMP"
fi
BENCH_PY="$VENV/bin/python"
