"""``warden vault``: the PII vault — reveal a token (recorded), list reads, shred a tenant.

The master key comes from ``WARDEN_VAULT_KEY`` (or the file ``WARDEN_VAULT_KEY_FILE``, or
``.warden/vault.key``), as for the server: run these where the server's key is set.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.table import Table

from warden.cli._common import StoreOpt, fail, guard, out
from warden.store import Store, default_store_url
from warden.telemetry import Vault, new_master_key

vault_app = typer.Typer(
    help="The PII vault: reveal a token's raw value (recorded), list reads, shred a tenant's key.",
    no_args_is_help=True,
)

TenantOpt = Annotated[str, typer.Option("--tenant", help="The tenant the token or key belongs to.")]


def _vault(store: str | None) -> tuple[Store, Vault]:
    st = Store(store or default_store_url())
    return st, Vault(st)


@vault_app.command("reveal")
def reveal(
    token: Annotated[str, typer.Argument(help="A PII token from the ledger (pii:<kind>:<hex>).")],
    tenant: TenantOpt,
    reader: Annotated[str, typer.Option("--reader", help="Who reads it (recorded).")],
    purpose: Annotated[str, typer.Option("--purpose", help="Why (recorded).")],
    store: StoreOpt = None,
) -> None:
    """Print the raw value behind TOKEN (kept when the spec sets pii.vault); the read is
    recorded with the reader and the purpose."""
    if not reader.strip() or not purpose.strip():
        raise fail("a read needs --reader and --purpose")

    def body() -> None:
        st, vault = _vault(store)
        try:
            raw = vault.reveal(tenant, token, reader=reader, role="auditor", purpose=purpose)
        finally:
            st.dispose()
        if raw is None:
            raise fail(f"no raw value kept for {token!r} in tenant {tenant!r}")
        sys.stdout.write(raw + "\n")

    guard(body)


@vault_app.command("reads")
def reads(
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines, newest first.")] = False,
    store: StoreOpt = None,
) -> None:
    """Who read which raw value, in which role, why and when (newest first)."""

    def body() -> None:
        st, vault = _vault(store)
        try:
            found = vault.reads(tenant, limit=limit)
        finally:
            st.dispose()
        if as_json:
            for r in found:
                row = {
                    "tenant": r.tenant,
                    "ref": r.ref,
                    "reader": r.reader,
                    "role": r.role,
                    "purpose": r.purpose,
                    "at": r.at.isoformat(),
                }
                sys.stdout.write(json.dumps(row) + "\n")
            return
        table = Table("at", "tenant", "ref", "reader", "role", "purpose")
        for r in found:
            table.add_row(r.at.isoformat(), r.tenant, r.ref, r.reader, r.role, r.purpose)
        out.print(table)

    guard(body)


@vault_app.command("shred")
def shred(
    tenant: TenantOpt,
    by: Annotated[str, typer.Option("--by", help="Who shreds (recorded with the key).")],
    yes: Annotated[bool, typer.Option("--yes", help="Do it (it cannot be undone).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The result as JSON.")] = False,
    store: StoreOpt = None,
) -> None:
    """Destroy TENANT's vault key: its sealed values (approval arguments, run state, kept
    raw values) become unreadable for good; the ledger, which holds only tokens, still
    verifies. Irreversible: needs --yes."""
    if not yes:
        raise fail(f"shredding tenant {tenant!r}'s key cannot be undone: add --yes")

    def body() -> None:
        st, vault = _vault(store)
        try:
            done = vault.shred(tenant, by=by)
        finally:
            st.dispose()
        if as_json:
            sys.stdout.write(json.dumps(done) + "\n")
        else:
            out.print(
                f"tenant {tenant}: {done['generations']} key generation(s) destroyed, "
                f"{done['values']} kept value(s) deleted",
                highlight=False,
            )

    guard(body)


@vault_app.command("keygen")
def keygen() -> None:
    """Print a new master key for WARDEN_VAULT_KEY (keep it in your secret manager)."""
    sys.stdout.write(new_master_key() + "\n")
