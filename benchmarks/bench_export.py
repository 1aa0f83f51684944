"""What the incremental export costs: the writer's shared lock per batch (PostgreSQL), and
reading pages.

    python -m benchmarks.bench_export [--url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]

Prints medians over alternated rounds (with and without the lock, so drift of a shared
machine lands on both sides) and their ratio. Uses a throwaway database it creates.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

from sqlalchemy import create_engine, text

from warden.ledger import _writer
from warden.ledger._export import export_page
from warden.ledger._writer import _Buffered, write_events
from warden.store import Store


def _batch(round_no: int, size: int = 256, streams: int = 16) -> list[_Buffered]:
    ts = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    return [
        _Buffered(f"s{round_no % 4}-{i % streams}", "t1", None, ts, "executed", '{"ok":true}')
        for i in range(size)
    ]


def _time_batches(store: Store, rounds: int, locked: bool) -> list[float]:
    original = _writer.hold_for_export
    if not locked:
        _writer.hold_for_export = lambda conn: None  # type: ignore[assignment]
    try:
        samples = []
        for r in range(rounds):
            events = _batch(r)
            start = time.perf_counter()
            with store.write() as conn:
                write_events(store, conn, events)
            samples.append(time.perf_counter() - start)
        return samples
    finally:
        _writer.hold_for_export = original  # type: ignore[assignment]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batches", type=int, default=30)
    args = parser.parse_args()
    name = f"warden_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = args.url.rsplit("/", 1)[0] + "/" + name
    store = Store(url)
    try:
        with_lock: list[float] = []
        without: list[float] = []
        for _ in range(args.rounds):
            without += _time_batches(store, args.batches, locked=False)
            with_lock += _time_batches(store, args.batches, locked=True)
        a, b = statistics.median(without), statistics.median(with_lock)
        print(f"256-event batch over 16 streams, {len(with_lock)} batches each, medians:")
        print(f"  without the export lock {a * 1e3:8.3f} ms")
        print(f"  with the export lock    {b * 1e3:8.3f} ms   ratio {b / a:.3f}")
        pages: list[float] = []
        n = 0
        cursor = ""
        while True:
            start = time.perf_counter()
            page = export_page(store, after=cursor, limit=1000)
            pages.append(time.perf_counter() - start)
            n += len(page.events)
            if page.next == cursor:
                break
            cursor = page.next
        per_page = statistics.median(pages[:-1]) if len(pages) > 1 else pages[0]
        print(f"export: {n} events in {len(pages)} pages of 1000; median page {per_page * 1e3:.1f} ms"
              f" ({1000 / per_page:,.0f} events/s)")
    finally:
        store.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()

