"""``warden ledger archive / unarchive / verify --archive``: the CLI side of
``warden.ledger._archive`` (secrets, dates, retention classes, reports)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from warden.cli._common import err, out
from warden.errors import UsageError
from warden.ledger._archive import ArchiveReport, ArchiveResult, archive
from warden.secrets import SecretResolver
from warden.store import Store
from warden.store._retention import RetentionSettings
from warden.store._tables import ledger_heads


def print_archive_report(report: ArchiveReport, path: Path) -> None:
    pin = "pinned" if report.key_pinned else "NOT pinned (pass --public-key)"
    h = report.header
    if report.ok:
        out.print(
            f"[green]archive verified[/green]: {path}: {report.events} events of"
            f" {report.streams} streams before {h.get('before')}"
            f" (tenant {h.get('tenant') or 'all'}), signed by key {report.key_id} {pin}"
            + (f"; keep until {h['retain_until']}" if h.get("retain_until") else ""),
            highlight=False,
        )
        return
    err.print(
        f"[red]archive tampered[/red]: {path}: {len(report.problems)} problem(s);"
        f" first: {report.problems[0]}",
        highlight=False,
    )
    for problem in report.problems[1:10]:
        err.print(f"  also: {problem}", highlight=False)
    raise typer.Exit(1)


def retention_settings() -> RetentionSettings:
    """The server's retention settings (WARDEN_RETENTION), imported only when needed: the
    server package pulls in FastAPI."""
    from warden.server._settings import ServerSettings

    return ServerSettings().retention


def archive_secret(ref: str | None, secrets_file: Path | None) -> str:
    if ref is None:
        ref = retention_settings().archive_secret
    if ref is None:
        raise UsageError(
            "no archive secret: pass --secret env:NAME (or file:NAME with --secrets-file), "
            "or set archive_secret in WARDEN_RETENTION"
        )
    if not ref.startswith(("env:", "file:")):
        raise UsageError(f"--secret must be env:NAME or file:NAME, not {ref.split(':')[0]!r}:")
    return SecretResolver(secrets_file).mint(ref).value


def parse_before(text: str, now: datetime | None = None) -> datetime:
    """``2026-01-31`` (midnight UTC), an ISO time with its offset, or an age: ``365d``,
    ``12h``."""
    now = now or datetime.now(UTC)
    if text[:-1].isdigit() and text[-1:] in ("d", "h"):
        amount = int(text[:-1])
        return now - (timedelta(days=amount) if text.endswith("d") else timedelta(hours=amount))
    try:
        if len(text) == 10:
            return datetime.fromisoformat(text).replace(tzinfo=UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--before {text!r}: write a date (2026-01-31), a time with its offset "
            "(2026-01-31T12:00:00Z) or an age (365d, 12h)"
        ) from None
    if parsed.tzinfo is None:
        raise UsageError(f"--before {text!r} has no offset: add Z for UTC")
    return parsed.astimezone(UTC)


def archive_by_retention(
    st: Store,
    signing: Ed25519PrivateKey,
    secret_value: str,
    ref: str,
    out_dir: Path,
    only: str | None,
) -> None:
    settings = retention_settings()
    now = datetime.now(UTC)
    out_dir.mkdir(parents=True, exist_ok=True)
    with st.read() as conn:
        tenants = sorted({str(t) for (t,) in conn.execute(select(ledger_heads.c.tenant))})
    for tenant in tenants if only is None else [only]:
        name, cls = settings.class_of(tenant)
        if cls.store_days is None:
            out.print(f"{tenant}: class {name} keeps its full ledger", highlight=False)
            continue
        retain = None if cls.archive_years is None else now + timedelta(days=365 * cls.archive_years)
        done = archive(
            st,
            before=now - timedelta(days=cls.store_days),
            out=out_dir / f"{tenant}-{now.strftime('%Y%m%dT%H%M%SZ')}.archive",
            key=signing,
            secret=secret_value,
            secret_ref=ref,
            tenant=tenant,
            retain_until=retain,
        )
        print_archived(done, f"{tenant} (class {name}): ")


def print_archived(done: ArchiveResult, prefix: str = "") -> None:
    if done.checkpoint is None:
        out.print(
            f"{prefix}nothing to archive" + (f" (pruned {done.pruned} left by an interrupted "
                                              "archive)" if done.pruned else ""),
            highlight=False,
        )
        return
    out.print(
        f"{prefix}archived {done.events} events of {done.streams} streams to {done.path};"
        f" pruned {done.pruned}; cuts signed in checkpoint {done.checkpoint}",
        highlight=False,
    )
