"""Tool factory for servers started by the tests (``--tools tests/server_tools.py:tools``).

Side effects go to a SQLite file named by $WARDEN_TEST_EFFECTS, so a test can count them
whichever process (or replica) executed the tool.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from conftest import Effects, shop_tools

from warden.secrets import Secret


class FileEffects(Effects):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS effects (kind TEXT, data TEXT)")

    def note(self, kind: str, data: dict[str, Any]) -> None:
        with sqlite3.connect(self.path, timeout=30) as conn:
            conn.execute("INSERT INTO effects VALUES (?, ?)", (kind, repr(sorted(data.items()))))


class _Recorder(list[dict[str, Any]]):
    def __init__(self, sink: FileEffects, kind: str) -> None:
        super().__init__()
        self.sink, self.kind = sink, kind

    def append(self, item: dict[str, Any]) -> None:
        super().append(item)
        self.sink.note(self.kind, item)


def count_effects(path: str, kind: str) -> int:
    with sqlite3.connect(path, timeout=30) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS effects (kind TEXT, data TEXT)")
        return int(
            conn.execute("SELECT count(*) FROM effects WHERE kind = ?", (kind,)).fetchone()[0]
        )


def tools() -> list[Any]:
    effects = FileEffects(os.environ["WARDEN_TEST_EFFECTS"])
    effects.saved = _Recorder(effects, "saved")
    effects.paid = _Recorder(effects, "paid")
    effects.sent = _Recorder(effects, "sent")
    return shop_tools(effects)


SECRET_SPEC = """
name: psp
version: "1"
owner: tests@example.com
tier: autonomous
agents:
  bot: {scopes: [pay]}
tools:
  charge: {effect: money, scope: pay, credential: env:WARDEN_TEST_PSP_KEY}
  charge_fails: {effect: money, scope: pay, credential: env:WARDEN_TEST_PSP_KEY}
policies:
  - {name: big, when: 'args.amount > 1000.0', effect: require_approval, reason: big}
  # autonomous: a money tool runs alone only under an allow rule (its threshold)
  - {name: charge_alone, when: 'true', effect: allow, reason: charges run alone}
"""


def secret_tools() -> list[Any]:
    """Tools that receive a credential, and careless ones that echo it back."""
    from warden import ToolError, tool

    @tool(effect="money")
    def charge(amount: float, credential: Secret) -> dict[str, Any]:
        return {
            "charged": amount,
            "debug": f"used key {credential.value}",
            "auth": credential.value,
        }

    @tool(effect="money")
    def charge_fails(amount: float, credential: Secret) -> dict[str, Any]:
        raise ToolError(f"PSP refused key {credential.value}")

    return [charge, charge_fails]
