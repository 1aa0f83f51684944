"""``warden ledger``: verify (online or from an export), show, export, signed checkpoints,
and settling writes whose outcome was never recorded."""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from rich.table import Table

from warden.cli._archive import (
    archive_by_retention,
    archive_secret,
    parse_before,
    print_archive_report,
    print_archived,
    retention_settings,
)
from warden.cli._common import StoreOpt, err, guard, out
from warden.cli._follow import HttpSource, StoreSource, follow_export
from warden.errors import UsageError, WardenError
from warden.ledger import (
    KEY_ENV,
    LedgerWriter,
    VerifyReport,
    export_jsonl,
    generate_key,
    iter_events,
    key_path,
    load_private_key,
    load_public_key,
    merge_into_file,
    read_checkpoint_file,
    read_export,
    settle,
    stored_checkpoints,
    take_checkpoint,
    unsettled,
    verify,
    verify_export,
)
from warden.ledger._archive import archive, verify_archive
from warden.store import Store, default_store_url

ledger_app = typer.Typer(
    help="The tamper-evident ledger: verify, show a run, export, sign checkpoints, settle.",
    no_args_is_help=True,
)

KeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--key",
        help=f"Ed25519 private key file that signs checkpoints [default: ${KEY_ENV}]",
        show_default=False,
    ),
]
TenantOpt = Annotated[str | None, typer.Option(help="Only this tenant.")]
SecretOpt = Annotated[
    str | None,
    typer.Option(
        "--secret",
        help="Secret reference of the archive key material: env:NAME or file:NAME"
        " [default: archive_secret of WARDEN_RETENTION]",
        show_default=False,
    ),
]
SecretsFileOpt = Annotated[
    Path | None, typer.Option(help="The secrets file that file: references read (mode 600).")
]


@contextmanager
def open_store(url: str | None) -> Iterator[Store]:
    url = url or default_store_url()
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if path != ":memory:" and not Path(path).exists():
            raise WardenError(f"no store at {path}; run `warden demo` first or pass --store URL")
    store = Store(url)
    try:
        yield store
    finally:
        store.dispose()


def _signing_key(given: Path | None, *, required: bool) -> Ed25519PrivateKey | None:
    path = key_path(given)
    if path is None:
        if required:
            raise UsageError(f"no signing key: pass --key FILE or set {KEY_ENV}")
        return None
    return load_private_key(path)


@ledger_app.command("verify")
def ledger_verify(
    store: StoreOpt = None,
    tenant: Annotated[
        str | None, typer.Option(help="Only the streams holding this tenant's events.")
    ] = None,
    export: Annotated[
        Path | None,
        typer.Option(help="Verify this export file offline, with no database."),
    ] = None,
    checkpoints: Annotated[
        Path | None,
        typer.Option(help="Checkpoint file to verify against [default: the store's]."),
    ] = None,
    public_key: Annotated[
        Path | None,
        typer.Option(help="The public key checkpoints must be signed with (pins it)."),
    ] = None,
    key: KeyOpt = None,
    archive_file: Annotated[
        Path | None,
        typer.Option(
            "--archive", help="Verify this archive (`warden ledger archive`) offline."
        ),
    ] = None,
    secret: SecretOpt = None,
    secrets_file: SecretsFileOpt = None,
) -> None:
    """Recompute the hash chains, compare them with the signed checkpoints and cross-check
    runs, approvals and idempotency records; exit 1 naming the first problem.

    With --archive: the archive's signature, its decryption and every archived chain up to
    its signed cut, with no database."""

    def body() -> None:
        public: Ed25519PublicKey | None = None
        if public_key is not None:
            public = load_public_key(public_key)
        elif key_path(key) is not None:
            signing = _signing_key(key, required=False)
            public = None if signing is None else signing.public_key()
        if archive_file is not None:
            print_archive_report(
                verify_archive(
                    archive_file, archive_secret(secret, secrets_file), public_key=public
                ),
                archive_file,
            )
            return
        cps = None if checkpoints is None else read_checkpoint_file(checkpoints)
        if export is not None:
            report = verify_export(read_export(export), cps or [], public_key=public, tenant=tenant)
        else:
            with open_store(store) as st:
                report = verify(st, tenant=tenant, checkpoints=cps, public_key=public)
        _print_report(report)

    guard(body)


def _print_report(report: VerifyReport) -> None:
    if report.checkpoints:
        pin = "pinned" if report.key_pinned else "NOT pinned (pass --public-key)"
        signed = (
            f"{report.checkpoints} signed checkpoint(s), the last at {report.last_checkpoint_at},"
            f" key {report.key_id} {pin}"
        )
    else:
        signed = "no signed checkpoints: a consistent rewrite would not be detected"
    if report.ok:
        out.print(
            f"[green]ledger verified[/green]: {report.events} events in {report.streams}"
            f" streams, chain intact; {signed}",
            highlight=False,
        )
        return
    err.print(
        f"[red]ledger tampered[/red]: {len(report.problems)} problem(s); first: {report.first}",
        highlight=False,
    )
    for problem in report.problems[1:10]:
        err.print(f"  also: {problem}", highlight=False)
    err.print(f"  ({signed})", highlight=False)
    raise typer.Exit(1)


@ledger_app.command("unarchive")
def ledger_unarchive(
    archive_file: Annotated[Path, typer.Argument(help="The archive to open.")],
    output: Annotated[
        Path, typer.Option("--out", "-o", help="The events file to create (JSON lines).")
    ],
    public_key: Annotated[
        Path | None,
        typer.Option(help="The public key the archive must be signed with (pins it)."),
    ] = None,
    secret: SecretOpt = None,
    secrets_file: SecretsFileOpt = None,
) -> None:
    """Verify an archive, then write its events as export JSON lines (what `ledger export`
    writes); an archive that does not verify is not opened."""

    def body() -> None:
        public = None if public_key is None else load_public_key(public_key)
        report = verify_archive(
            archive_file, archive_secret(secret, secrets_file), public_key=public
        )
        if not report.ok:
            print_archive_report(report, archive_file)
        try:
            with output.open("xb") as fh:
                fh.write(report.plaintext)
        except FileExistsError:
            raise UsageError(f"{output} exists; not overwriting it") from None
        out.print(
            f"{report.events} events of {report.streams} streams written to {output}"
            + ("" if report.key_pinned else " (signing key NOT pinned: pass --public-key)"),
            highlight=False,
        )

    guard(body)


@ledger_app.command("archive")
def ledger_archive(
    before: Annotated[
        str | None,
        typer.Option(help="Archive events older than this: 2026-01-31 (UTC), an ISO time, 365d."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--out", "-o", help="The archive file to create.")
    ] = None,
    tenant: TenantOpt = None,
    retention: Annotated[
        bool,
        typer.Option(
            "--retention",
            help="Each tenant by its retention class (WARDEN_RETENTION): one archive per "
            "tenant whose class has store_days, in --out-dir.",
        ),
    ] = False,
    out_dir: Annotated[
        Path | None, typer.Option(help="--retention: the directory for the archives.")
    ] = None,
    store: StoreOpt = None,
    key: KeyOpt = None,
    secret: SecretOpt = None,
    secrets_file: SecretsFileOpt = None,
) -> None:
    """Move old events into a signed, encrypted archive and prune them from the store; a
    signed checkpoint records each cut, so the store still verifies and so does the archive
    (`warden ledger verify --archive FILE`)."""

    def body() -> None:
        signing = _signing_key(key, required=True)
        assert signing is not None
        secret_value = archive_secret(secret, secrets_file)
        ref = secret or retention_settings().archive_secret or ""
        with open_store(store) as st:
            if retention:
                if out_dir is None or before is not None or output is not None:
                    raise UsageError("--retention goes with --out-dir, not --before or --out")
                archive_by_retention(st, signing, secret_value, ref, out_dir, tenant)
                return
            if before is None or output is None:
                raise UsageError("pass --before DATE and --out FILE (or --retention --out-dir)")
            done = archive(
                st,
                before=parse_before(before),
                out=output,
                key=signing,
                secret=secret_value,
                secret_ref=ref,
                tenant=tenant,
            )
            print_archived(done)

    guard(body)


@ledger_app.command("show")
def ledger_show(
    run_id: Annotated[
        str, typer.Argument(help="The run to show (from the demo summary or `ledger export`).")
    ],
    store: StoreOpt = None,
) -> None:
    """Print one run's timeline."""

    def body() -> None:
        with open_store(store) as st:
            events = list(iter_events(st, run_id=run_id))
        if not events:
            raise WardenError(f"no events for run {run_id!r}")
        table = Table(
            "seq",
            "time (UTC)",
            "event",
            "detail",
            title=f"run {run_id} (tenant {events[0].tenant})",
        )
        for ev in events:
            table.add_row(str(ev.seq), ev.ts[11:23], ev.type, summarize(ev.type, ev.payload))
        out.print(table)

    guard(body)


def summarize(kind: str, p: dict[str, Any]) -> str:
    def short(value: Any, n: int = 70) -> str:
        text = str(value)
        return text if len(text) <= n else text[: n - 3] + "..."

    try:
        match kind:
            case "run_started":
                return (
                    f"{p['workflow']} v{p['version']} agent={p['agent']} tier={p['tier']}"
                    f" task={short(p['task'], 40)}"
                )
            case "action_requested":
                return f"{p['tool']}({short(p['args'], 60)})"
            case "decision":
                return f"{p['effect']} rules={p['rules']}" + (
                    f" window={p['window']}" if p.get("window") else ""
                )
            case "facts":
                return short(p.get("error") or p["facts"])
            case "executed":
                return f"ok {short(p['result'], 60)}" + (" (replayed)" if p.get("replayed") else "")
            case "denied" | "failed":
                reasons = "; ".join(p.get("reasons") or [p.get("detail", "")])
                return f"{p['kind']}: {short(reasons, 80)}"
            case "approval_requested":
                return f"{p['approval_id']} → {p['role']}: {short('; '.join(p['reasons']), 60)}"
            case "approval_decided":
                return (
                    f"{p['approval_id']} {p['decision']} by {p['approver']}:"
                    f" {short(p['rationale'], 50)}"
                )
            case "intent":
                return f"{p['tool']} key={str(p['idempotency_key'])[:12]}"
            case "reconciled":
                return f"settled as {p['settled_as']} by {p['by']}: {short(p['note'], 50)}"
            case "unrecordable":
                return f"a {p['type']} event the store refused: {short(p['error'], 60)}"
            case "run_finished":
                return f"{p['outcome']} after {p['steps']} steps" + (
                    f" ({p['stopped']})" if p.get("stopped") else ""
                )
    except (KeyError, TypeError):
        pass  # an event of another shape: shown whole below
    return short(p)


@ledger_app.command("export")
def ledger_export(
    output: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="File to write (default: stdout); appended to with --cursor-file."
        ),
    ] = None,
    store: StoreOpt = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's events.")] = None,
    key: KeyOpt = None,
    checkpoints: Annotated[
        Path | None,
        typer.Option(
            help="Checkpoint file to add the store's new checkpoints to [default: OUT.checkpoints]",
        ),
    ] = None,
    cursor_file: Annotated[
        Path | None,
        typer.Option(
            help="Incremental: export only what came after the cursor in this file, then save "
            "the new cursor there (created if absent: from the beginning).",
        ),
    ] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="Keep polling for new events (Ctrl-C stops; resume with the same --cursor-file).",
        ),
    ] = False,
    interval: Annotated[
        float, typer.Option(min=0.05, help="--follow: seconds between polls.")
    ] = 1.0,
    url: Annotated[
        str | None,
        typer.Option(
            envvar="WARDEN_URL",
            help="Read from this server (GET /v1/ledger/export?after=) instead of the store; "
            "with --cursor-file or --follow. Checkpoints come from the server (all-tenant "
            "keys) when --out or --checkpoints is given.",
        ),
    ] = None,
    api_key: Annotated[
        str,
        typer.Option(envvar="WARDEN_API_KEY", help="--url: an auditor (or admin) key."),
    ] = "",
) -> None:
    """Write every event as JSON lines; with a signing key, take a checkpoint first and
    bring the checkpoint file up to date, so the export can be verified offline.

    With --cursor-file or --follow, only the events after a cursor, in pages, in the
    order they were committed: the lines appended over any number of runs form one export
    that `warden ledger verify --export` checks (with the checkpoint file, when keyed)."""

    def body() -> None:
        cp_file = checkpoints or (
            None if output is None else output.with_name(output.name + ".checkpoints")
        )
        if url is not None:
            if cursor_file is None and not follow:
                raise UsageError("--url exports incrementally: pass --cursor-file or --follow")
            if store is not None or key is not None:
                raise UsageError("--url reads the server: --store and --key are the server's")
            source = HttpSource(url, api_key, tenant, want_checkpoints=cp_file is not None)
            try:
                follow_export(source, output, cp_file, cursor_file, follow, interval)
            finally:
                source.client.close()
            return
        with open_store(store) as st:
            signing = _signing_key(key, required=False)
            if signing is not None and cp_file is None:
                raise UsageError("exporting to stdout with a key: pass --checkpoints FILE")
            if cursor_file is not None or follow:
                follow_export(
                    StoreSource(st, signing, tenant), output, cp_file, cursor_file, follow,
                    interval,
                )  # fmt: skip
                return
            if signing is not None:
                assert cp_file is not None
                made = take_checkpoint(st, signing)
                assert made is not None
                merge_into_file(cp_file, stored_checkpoints(st))
            if output is None:
                export_jsonl(st, sys.stdout, tenant=tenant)
            else:
                with output.open("w", encoding="utf-8") as fh:
                    n = export_jsonl(st, fh, tenant=tenant)
                err.print(f"wrote {n} events to {output}", highlight=False)
            if signing is not None:
                err.print(f"checkpoints in {cp_file}", highlight=False)
            else:
                err.print(
                    f"not checkpointed: no signing key (--key or {KEY_ENV}); an offline verify"
                    " of this export can only check the chains",
                    highlight=False,
                )

    guard(body)


@ledger_app.command("checkpoint")
def ledger_checkpoint(
    store: StoreOpt = None,
    key: KeyOpt = None,
    output: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Also add it to this checkpoint file (kept outside)."),
    ] = None,
) -> None:
    """Sign the chain heads that moved since the last checkpoint and store the checkpoint."""

    def body() -> None:
        with open_store(store) as st:
            signing = _signing_key(key, required=True)
            assert signing is not None
            made = take_checkpoint(st, signing)
            assert made is not None
            if output is not None:
                merge_into_file(output, stored_checkpoints(st))
            out.print(
                f"checkpoint {made.n}: {len(made.heads)} stream head(s) signed by key"
                f" {made.fields['key']}" + (f", added to {output}" if output else ""),
                highlight=False,
            )

    guard(body)


@ledger_app.command("keygen")
def ledger_keygen(
    output: Annotated[
        Path, typer.Option("--out", "-o", help="Private key file to create (and OUT.pub).")
    ],
) -> None:
    """Make an Ed25519 key pair for signing checkpoints. Keep the private key out of the
    database's host backups; give the .pub file to whoever verifies."""

    def body() -> None:
        private, public = generate_key(output)
        out.print(f"private key {private} (mode 0600), public key {public}", highlight=False)

    guard(body)


@ledger_app.command("unsettled")
def ledger_unsettled(
    store: StoreOpt = None,
    tenant: TenantOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines, one per action.")] = False,
) -> None:
    """Writes whose intent is recorded but whose outcome is not (or is unknown)."""

    def body() -> None:
        with open_store(store) as st:
            items = unsettled(st, tenant=tenant)
        if as_json:
            for item in items:
                sys.stdout.write(json.dumps(item.to_json(), ensure_ascii=False) + "\n")
            return
        if not items:
            out.print("no unsettled writes")
            return
        table = Table("action", "tenant", "tool", "intent at (UTC)", "why", "key state")
        for item in items:
            table.add_row(
                item.action_id,
                item.tenant,
                item.tool or "",
                item.intent_at or "",
                item.reason,
                item.key_state or "-",
            )
        out.print(table)

    guard(body)


@ledger_app.command("settle")
def ledger_settle(
    action_id: Annotated[str, typer.Argument(help="The action (from `ledger unsettled`).")],
    settled_as: Annotated[
        str, typer.Option("--as", help="done (it had its effect) or not-executed.")
    ],
    note: Annotated[str, typer.Option(help="What was checked, recorded on the ledger.")],
    result: Annotated[
        str | None, typer.Option(help="JSON result to answer repeats with (--as done).")
    ] = None,
    by: Annotated[str | None, typer.Option(help="Who settles it [default: $USER].")] = None,
    store: StoreOpt = None,
) -> None:
    """Record the outcome of a write that never got one, and settle its idempotency key."""

    def body() -> None:
        if settled_as not in ("done", "not-executed"):
            raise UsageError(f"--as must be done or not-executed, not {settled_as!r}")
        value: Any = None
        if result is not None:
            if settled_as != "done":
                raise UsageError("--result goes with --as done")
            try:
                value = json.loads(result)
            except ValueError as exc:
                raise UsageError(f"--result is not JSON: {exc}") from None
        with open_store(store) as st:
            ledger = LedgerWriter(st)
            try:
                settle(
                    st,
                    ledger,
                    action_id,
                    outcome="done" if settled_as == "done" else "not-executed",
                    note=note,
                    by=by or getpass.getuser(),
                    result=value,
                )
            finally:
                ledger.close()
            out.print(f"action {action_id} settled as {settled_as}", highlight=False)

    guard(body)
