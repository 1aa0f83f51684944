"""``warden ledger export --cursor-file / --follow``: pages from a store or a server, the
cursor saved between polls, the checkpoint file kept in step with the export."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Protocol

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from warden.cli._common import err
from warden.errors import WardenError
from warden.ledger import (
    Checkpoint,
    decode_cursor,
    export_page,
    merge_into_file,
    stored_checkpoints,
    take_checkpoint,
)
from warden.store import Store


class Source(Protocol):
    def checkpoints(self) -> list[Checkpoint] | None:
        """Before a poll: the checkpoints to add to the file after it (None: none)."""

    def page(self, cursor: str) -> tuple[list[str], str]:
        """The lines after ``cursor`` (one page) and the next cursor."""


class StoreSource:
    def __init__(self, st: Store, signing: Ed25519PrivateKey | None, tenant: str | None) -> None:
        self.st, self.signing, self.tenant = st, signing, tenant

    def checkpoints(self) -> list[Checkpoint] | None:
        if self.signing is None:
            return None
        take_checkpoint(self.st, self.signing, force=False)
        return stored_checkpoints(self.st)

    def page(self, cursor: str) -> tuple[list[str], str]:
        page = export_page(self.st, after=cursor, limit=1000, tenant=self.tenant)
        return list(page.lines()), page.next


class HttpSource:
    """``GET /v1/ledger/export?after=`` of a server (an auditor needs no database access)."""

    def __init__(self, url: str, api_key: str, tenant: str | None, want_checkpoints: bool) -> None:
        self.client = httpx.Client(
            base_url=url.rstrip("/"), headers={"Authorization": f"Bearer {api_key}"}, timeout=60
        )
        self.tenant, self.want = tenant, want_checkpoints

    def _get(self, path: str, **params: str) -> httpx.Response:
        try:
            response = self.client.get(path, params=params)
        except httpx.HTTPError as exc:
            raise WardenError(f"cannot reach {self.client.base_url}: {exc}") from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text[:200]
            raise WardenError(f"{path}: {response.status_code}: {detail}")
        return response

    def checkpoints(self) -> list[Checkpoint] | None:
        if not self.want:
            return None
        try:
            response = self.client.get("/v1/ledger/checkpoints")
        except httpx.HTTPError:
            response = None
        if response is not None and response.status_code == 403:
            # A tenant's key: one signature covers every tenant's heads, so the server
            # keeps them from it. The export still verifies as chains.
            err.print(
                "not checkpointed: checkpoints need an all-tenant key; an offline verify of "
                "this export can only check the chains",
                highlight=False,
            )
            self.want = False
            return None
        text = self._get("/v1/ledger/checkpoints").text
        return [
            Checkpoint.from_line(line, f"checkpoint {i}")
            for i, line in enumerate(text.splitlines(), 1)
            if line.strip()
        ]

    def page(self, cursor: str) -> tuple[list[str], str]:
        params = {"after": cursor, "limit": "1000"}
        if self.tenant is not None:
            params["tenant"] = self.tenant
        response = self._get("/v1/ledger/export", **params)
        return response.text.splitlines(keepends=True), response.headers["warden-next-cursor"]


def follow_export(
    source: Source,
    output: Path | None,
    cp_file: Path | None,
    cursor_file: Path | None,
    follow: bool,
    interval: float,
) -> None:
    """Export in pages from the saved cursor. Each poll: take the checkpoints (signing one
    first, with a key), read every page up to the end (which holds all they signed), write
    and flush the lines, then add the checkpoints to the file and save the cursor — so the
    export file, the checkpoint file and the cursor agree whenever a poll is not in
    progress. Ctrl-C saves the cursor of the lines written; a crash mid-poll repeats that
    poll's lines on resume (at least once, never a gap); verify reports a repeated event as
    inserted, so cut the file back to the last line before the repeat."""
    cursor = read_cursor(cursor_file)
    fh = sys.stdout if output is None else output.open("a", encoding="utf-8")
    total = 0
    try:
        while True:
            signed = source.checkpoints()
            while True:
                lines, nxt = source.page(cursor)
                fh.writelines(lines)
                total += len(lines)
                done = nxt == cursor or len(lines) < 1000
                cursor = nxt
                if done:
                    break
            fh.flush()
            if signed is not None and cp_file is not None:
                merge_into_file(cp_file, signed)
            if cursor_file is not None:
                save_cursor(cursor_file, cursor)
            if not follow:
                break
            time.sleep(interval)
    except KeyboardInterrupt:
        # ``cursor`` is always that of the last line handed to ``fh``: save it, so that a
        # Ctrl-C between the lines and the cursor does not print them again on resume.
        fh.flush()
        if cursor_file is not None:
            save_cursor(cursor_file, cursor)
    finally:
        if fh is not sys.stdout:
            fh.close()
    err.print(f"exported {total} events; cursor {cursor}", highlight=False)


def read_cursor(path: Path | None) -> str:
    if path is None or not path.exists():
        return ""
    text = path.read_text(encoding="utf-8").strip()
    decode_cursor(text)  # a file that holds no cursor is refused before anything is written
    return text


def save_cursor(path: Path, cursor: str) -> None:
    """Atomically: a crash leaves the old cursor or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(cursor + "\n", encoding="utf-8")
    os.replace(tmp, path)
