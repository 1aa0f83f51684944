"""The demo's store holds no raw e-mail address or card number, and its ledger verifies."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from warden.ledger import verify
from warden.store import Store
from warden.telemetry._detect import luhn_ok

EMAIL = re.compile(rb"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# not inside a hex hash or an id (the ledger's hashes hold digit runs that pass Luhn)
DIGIT_RUN = re.compile(rb"(?<![0-9A-Za-z])(?:[0-9][ -]?){12,18}[0-9](?![0-9A-Za-z])")


def _cards(data: bytes) -> list[bytes]:
    found = []
    for m in DIGIT_RUN.finditer(data):
        digits = re.sub(rb"[^0-9]", b"", m.group()).decode()
        if digits[0] in "3456" and luhn_ok(digits):
            found.append(m.group())
    return found


def test_demo_store_bytes_hold_no_raw_email_or_card(tmp_path: Path) -> None:
    db = tmp_path / ".warden" / "warden.db"
    done = subprocess.run(
        [sys.executable, "-m", "warden", "demo", "--tickets", "40", "--quiet"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "ledger verified" in done.stdout

    # the helpdesk (the demo's fake world) is full of addresses: the scan can find them
    helpdesk = (tmp_path / ".warden" / "helpdesk.db").read_bytes()
    assert len(set(EMAIL.findall(helpdesk))) > 10

    files = [p for p in db.parent.iterdir() if p.name.startswith("warden.db")]
    assert db in files
    for path in files:  # the database, and its WAL and shared-memory files if left
        data = path.read_bytes()
        assert EMAIL.findall(data) == [], path.name
        assert _cards(data) == [], path.name

    store = Store(f"sqlite:///{db}")
    try:
        report = verify(store)
        assert report.ok and report.events > 500
    finally:
        store.dispose()
