"""Kill switches: persisted, recorded, and effective in another process within a second."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from conftest import Effects, make_gateway

from warden.ledger import iter_events
from warden.pipeline import Scope, SwitchBoard

LOOP = textwrap.dedent(
    """
    import asyncio, json, sys, time
    sys.path.insert(0, {tests!r})
    from conftest import Effects, make_gateway
    from warden import Denied, FailureKind

    gw = make_gateway({url!r}, Effects())

    async def main():
        async with gw.run(tenant="acme", agent="bot", task="loop") as run:
            print("ready", flush=True)
            i = 0
            deadline = time.time() + 20
            while time.time() < deadline:
                i += 1
                r = await run.call("get_order", {{"order_id": f"o{{i}}"}})
                if isinstance(r, Denied) and r.kind is FailureKind.KILLED:
                    print(json.dumps({{"killed_at": time.time(), "reason": r.reasons[0]}}), flush=True)
                    return
                await asyncio.sleep(0.005)
            print(json.dumps({{"killed_at": None}}), flush=True)

    asyncio.run(main())
    gw.close()
    """
)


def test_switch_in_another_process_stops_calls_within_a_second(
    store_url: str, tmp_path: Path
) -> None:
    make_gateway(store_url, Effects()).close()
    script = tmp_path / "loop.py"
    script.write_text(LOOP.format(tests=str(Path(__file__).parent), url=store_url))
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    gw = make_gateway(store_url, Effects())
    flipped = time.time()
    gw.switches.set(Scope.TENANT, "acme", active=True, by="oncall@x", reason="runaway spend")
    out, err = proc.communicate(timeout=30)
    gw.close()
    assert proc.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["killed_at"] is not None, "the other process never saw the switch"
    assert report["killed_at"] - flipped < 1.0
    assert "runaway spend" in report["reason"]


def test_switches_are_listed_and_recorded(store_url: str) -> None:
    gw = make_gateway(store_url, Effects())
    board: SwitchBoard = gw.switches
    board.set("global", None, active=True, by="a", reason="drill")
    board.set("global", None, active=False, by="a", reason="drill over")
    board.set("workflow", "shop", active=True, by="b", reason="bad deploy")
    listed = {(s.scope.value, s.target): s.active for s in board.list()}
    assert listed == {("global", "*"): False, ("workflow", "shop"): True}
    gw.flush()
    changes = [e.payload for e in iter_events(gw.store) if e.type == "switch_changed"]
    assert [(c["target"], c["active"], c["by"]) for c in changes] == [
        ("*", True, "a"),
        ("*", False, "a"),
        ("shop", True, "b"),
    ]
    gw.close()


def test_a_reread_under_way_while_a_switch_flips_here_does_not_hide_it(store_url: str) -> None:
    """The background re-read that read the table before this process flipped a switch
    must not be taken as fresh: the next call sees the switch at once (fail closed), and
    a switch turned off here lets the next call through (CI saw the stale view once)."""
    import threading

    gw = make_gateway(store_url, Effects())
    board: SwitchBoard = gw.switches
    assert board.blocking("acme", "shop", "pay") is None
    read = threading.Event()
    go_on = threading.Event()
    real_list = board.list

    def slow_list() -> list:  # type: ignore[type-arg]
        found = real_list()
        read.set()
        go_on.wait(10)
        return found

    for active in (True, False):
        board.list = slow_list  # type: ignore[method-assign]
        board._loaded_at = -1e9
        reread = threading.Thread(target=board._refresh, kwargs={"every_s": 0.0})
        reread.start()
        assert read.wait(10)
        board.list = real_list  # type: ignore[method-assign]
        board.set("tenant", "acme", active=active, by="oncall@x", reason="flip")
        go_on.set()
        reread.join(10)
        blocked = board.blocking("acme", "shop", "pay")
        assert (blocked is not None) is active, f"a stale re-read hid the switch (active={active})"
        read.clear()
        go_on.clear()
    gw.close()
