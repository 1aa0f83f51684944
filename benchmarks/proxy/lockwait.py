"""Where a budgeted model call waits in PostgreSQL: a diagnostic for the proxy benchmark.

    .venv-proxy/bin/python benchmarks/proxy/lockwait.py [--conns 16] [--seconds 10] [--scope tenant]

Starts the fake upstream and ``warden serve --workers 2`` with one budget (``--scope``:
``tenant`` shares one counter between all calls, ``run`` gives each run its own, ``none``
declares no budget) on a throwaway database, drives wrk at C connections, and samples
``pg_stat_activity`` of that database every 20 ms: how many of its backends were waiting,
and on what (``Lock/advisory`` is the budget counter's lock, ``IO/WALSync`` or
``IO/WALWrite`` a commit's flush, ``Lock/transactionid`` a row lock), or idle inside a
transaction the server holds open while it works. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import collections
import json
import threading
import time
from pathlib import Path

import bench as pb
from bench import lb
from sqlalchemy import create_engine, text

BUDGETS = {
    "tenant": "  - {name: tenant_daily, scope: tenant, period: calendar_day, usd: 1000000}",
    "run": "  - {name: per_run, scope: run, usd: 1000000}",
    "none": None,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conns", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--scope", choices=sorted(BUDGETS), default="tenant")
    args = parser.parse_args()
    tmp = Path(pb.tempfile.mkdtemp(prefix="proxybench_lock_"))
    port = lb.free_port()
    up = pb.Proc(
        "upstream",
        [pb.PY, str(pb.HERE / "upstream.py"), "--port", str(port)],
        f"http://127.0.0.1:{port}/healthz",
    )
    try:
        with lb.pg_database() as store:
            key = pb.warden_key(store)
            spec = pb.warden_spec(tmp, f"http://127.0.0.1:{port}", BUDGETS[args.scope], "lock")
            w, url = pb.start_warden("warden-lock", store, spec, 2)
            try:
                db = store.rsplit("/", 1)[1]
                pb.run_wrk(url, "/v1/chat/completions", key, args.conns, 2, "lockwarm")
                seen: collections.Counter[str] = collections.Counter()
                samples = 0
                stop = threading.Event()

                def sample() -> None:
                    nonlocal samples
                    engine = create_engine(lb.PG_ADMIN_URL)
                    with engine.connect() as conn:
                        while not stop.is_set():
                            rows = conn.execute(
                                text(
                                    "SELECT state, wait_event_type, wait_event FROM pg_stat_activity"
                                    " WHERE datname = :db AND pid <> pg_backend_pid()"
                                ),
                                {"db": db},
                            ).all()
                            samples += 1
                            for state, kind, event in rows:
                                if state == "active":
                                    seen[f"active: {kind or 'CPU'}/{event or '-'}"] += 1
                                elif state and state.startswith("idle in transaction"):
                                    seen["idle in transaction (the app holds it open)"] += 1
                            time.sleep(0.02)
                    engine.dispose()

                t = threading.Thread(target=sample)
                t.start()
                res = pb.run_wrk(url, "/v1/chat/completions", key, args.conns, args.seconds, "lock")
                stop.set()
                t.join()
            finally:
                w.stop()
    finally:
        up.stop()
        pb.shutil.rmtree(tmp, ignore_errors=True)
    print(
        json.dumps(
            {
                "scope": args.scope,
                "conns": args.conns,
                "rps": round(res["rps"], 1),
                "p50_ms": res["p50"] / 1000,
                "p99_ms": res["p99"] / 1000,
                "errors": res["errors"],
                "samples": samples,
                "mean_active_backends_by_wait": {
                    k: round(v / samples, 2) for k, v in seen.most_common()
                },
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
