"""``warden serve``, ``warden keys`` and ``warden approvals``."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from warden.cli._common import StoreOpt, fail, out
from warden.errors import UsageError, WardenError

keys_app = typer.Typer(
    help="API keys: create (shown once), list, bind, revoke.", no_args_is_help=True
)
approvals_app = typer.Typer(
    help="Work the approval queue through the server's API (WARDEN_URL, WARDEN_API_KEY).",
    no_args_is_help=True,
)

UrlOpt = Annotated[str, typer.Option("--url", envvar="WARDEN_URL", help="The server's base URL.")]
KeyOpt = Annotated[
    str, typer.Option("--api-key", envvar="WARDEN_API_KEY", help="An approver (or admin) key.")
]
OnBehalfOpt = Annotated[
    str | None,
    typer.Option(help="Bridge keys only: the person this decision is made for (recorded)."),
]


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.", min=1, max=64)] = 1,
    store: StoreOpt = None,
    spec: Annotated[
        list[str] | None, typer.Option("--spec", help="Workflow spec file (repeat for more).")
    ] = None,
    tools: Annotated[
        list[str] | None,
        typer.Option(
            "--tools",
            help="Tool factory module:function or file.py:function, one per --spec, same order.",
        ),
    ] = None,
    key_rate_limit: Annotated[
        int, typer.Option(help="Requests per second per API key, across replicas (0: off).")
    ] = 0,
    migrate: Annotated[
        bool,
        typer.Option(
            help="Upgrade the schema at start-up (default only for the embedded SQLite store)."
        ),
    ] = False,
    webhooks: Annotated[
        str | None, typer.Option(help="YAML/JSON file of webhook targets (url, secret, events).")
    ] = None,
    secrets_file: Annotated[
        str | None, typer.Option(help="YAML/JSON file for file: secret references (mode 600).")
    ] = None,
    header_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds a client may take to send a request's headers (slow clients are cut off).",
            min=0.1,
        ),
    ] = 10.0,
    body_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds a request's body may take to arrive after its headers, else 408 (0: off).",
            min=0,
        ),
    ] = 30.0,
    keep_alive: Annotated[
        int, typer.Option(help="Seconds an idle keep-alive connection stays open.", min=1)
    ] = 5,
    ledger_key: Annotated[
        str | None,
        typer.Option(
            help="Ed25519 key file signing ledger checkpoints (warden ledger keygen); "
            "default $WARDEN_LEDGER_KEY; none: no checkpoints.",
        ),
    ] = None,
    checkpoint_every: Annotated[
        float, typer.Option(help="Seconds between signed checkpoints (with a key).", min=1)
    ] = 60.0,
    checkpoint_file: Annotated[
        str | None, typer.Option(help="Also append every checkpoint to this file.")
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
    metrics: Annotated[
        bool, typer.Option(help="Serve Prometheus metrics at /metrics (docs/telemetry.md).")
    ] = True,
    metrics_access: Annotated[
        str,
        typer.Option(
            help="Who may scrape /metrics: loopback (this host without a key, others with an "
            "admin or auditor key), key (always a key), open.",
        ),
    ] = "loopback",
    metrics_tenant_label: Annotated[
        bool, typer.Option(help="Label call, denial, error, approval and spend metrics by tenant.")
    ] = False,
) -> None:
    """Serve the /v1 control-plane API (OpenAPI at /docs and /openapi.json).

    With no --spec, serves the refund-triage demo workflow on its seeded helpdesk.
    Traces leave over OTLP/HTTP when the standard OTEL_* variables ask for it
    (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_TRACES_EXPORTER=otlp); off by default.
    """
    if metrics_access not in ("loopback", "key", "open"):
        raise fail(f"--metrics-access {metrics_access!r}: use loopback, key or open")
    import uvicorn

    from warden.store import Store, default_store_url

    url = store or default_store_url()
    auto = migrate or (store is None and "WARDEN_STORE" not in os.environ)
    env = {
        "WARDEN_STORE": url,
        "WARDEN_SPECS": json.dumps(spec or []),
        "WARDEN_TOOLS": json.dumps(tools or []),
        "WARDEN_KEY_RATE_LIMIT": str(key_rate_limit),
        "WARDEN_AUTO_MIGRATE": "true" if auto else "false",
        "WARDEN_HEADER_TIMEOUT_S": str(header_timeout),
        "WARDEN_BODY_TIMEOUT_S": str(body_timeout),
        "WARDEN_METRICS": "true" if metrics else "false",
        "WARDEN_METRICS_ACCESS": metrics_access,
        "WARDEN_METRICS_TENANT_LABEL": "true" if metrics_tenant_label else "false",
    }
    env["WARDEN_CHECKPOINT_S"] = str(checkpoint_every)
    if not os.environ.get("WARDEN_UI_SECRET"):
        # Every worker signs and reads the console's session cookies with the same secret;
        # sign-ins end when the server restarts unless WARDEN_UI_SECRET is set.
        import secrets

        env["WARDEN_UI_SECRET"] = secrets.token_urlsafe(32)
    if ledger_key:
        env["WARDEN_LEDGER_KEY"] = ledger_key
    if checkpoint_file:
        env["WARDEN_CHECKPOINT_FILE"] = checkpoint_file
    if webhooks:
        env["WARDEN_WEBHOOKS_FILE"] = webhooks
    if secrets_file:
        env["WARDEN_SECRETS_FILE"] = secrets_file
    os.environ.update(env)
    try:
        from warden.ledger import key_path, load_private_key
        from warden.server import ServerSettings
        from warden.server._state import ServerState

        # Fail fast, with one line, on what every worker would fail on.
        settings = ServerSettings()
        signing = key_path(settings.ledger_key)
        if signing is not None:
            load_private_key(signing)  # a bad key is one line now, not a crash per worker
        probe = ServerState(settings)
        names = ", ".join(sorted(probe.gateways))
        has_keys = bool(probe.keys.list())
        probe.close()
    except WardenError as exc:
        raise fail(str(exc)) from None
    except ValidationError as exc:  # a WARDEN_* variable out of range, e.g. WARDEN_UI_SECRET
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise fail(f"WARDEN_{where.upper()}: {first['msg']}") from None
    out.print(
        f"warden serve: workflows {names}; store {_mask(url)}; http://{host}:{port}/docs",
        highlight=False,
    )
    out.print(f"console: http://{host}:{port}/ui (sign in with an API key)", highlight=False)
    if not has_keys:
        out.print(
            "no API keys yet: create one with `warden keys create --role admin --name me --tenant '*'`"
        )
    del Store
    from warden.server._protocol import HeaderTimeoutProtocol

    own_dir = _multiprocess_metrics(workers, metrics)
    try:
        _run_uvicorn(uvicorn, HeaderTimeoutProtocol, host, port, workers, log_level, keep_alive)
    finally:
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)


def _multiprocess_metrics(workers: int, metrics: bool) -> str | None:
    """With several workers, each writes its metrics to files in PROMETHEUS_MULTIPROC_DIR
    and /metrics adds them up. Set before the workers import prometheus-client; emptied
    now, so counts of an earlier server are not added to this one's. Returns the
    directory made here (removed at exit), None when one was given or none is needed."""
    if not metrics:
        return None
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        return None
    if workers < 2:
        return None
    made = tempfile.mkdtemp(prefix="warden-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = made
    return made


def _run_uvicorn(
    uvicorn: Any,
    protocol: Any,
    host: str,
    port: int,
    workers: int,
    log_level: str,
    keep_alive: int,
) -> None:
    uvicorn.run(
        "warden.server:app_factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        http=protocol,
        timeout_keep_alive=keep_alive,
        timeout_graceful_shutdown=30,
    )


def _mask(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':')[0]}:***@{host}" if ":" in creds else url
    return url


def _parse_duration(text: str | None) -> timedelta | None:
    if text is None:
        return None
    from warden.spec._models import _parse_duration as parse

    try:
        value: timedelta = parse(text)
    except ValueError:
        raise UsageError(f"--expires {text!r}: use a duration such as 12h, 30d") from None
    return value


AgentOpt = Annotated[
    str | None, typer.Option(help="Agent keys: the spec's agent the key acts as (required).")
]
WorkflowOpt = Annotated[
    list[str] | None,
    typer.Option("--workflow", help="Agent keys: a workflow it may run (repeat; default: any)."),
]
ApprovalRoleOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--approval-role", help="Approver/admin keys: an approval role it decides for (repeat)."
    ),
]
BridgeOpt = Annotated[
    bool,
    typer.Option(
        "--bridge", help="Approver/admin keys: a chat/e-mail bridge that decides for named people."
    ),
]


def _binding(info: Any) -> str:
    parts = []
    if info.agent:
        parts.append(f"agent {info.agent}")
    if info.workflows:
        parts.append(f"workflows {', '.join(info.workflows)}")
    if info.approval_roles:
        parts.append(f"approval roles {', '.join(info.approval_roles)}")
    if info.bridge:
        parts.append("bridge")
    return f"; {'; '.join(parts)}" if parts else ""


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="admin, approver, agent or auditor.")],
    name: Annotated[
        str, typer.Option(help="Who or what uses the key (shown in the ledger as key:NAME).")
    ],
    tenant: Annotated[
        str, typer.Option(help="The tenant the key acts for; '*' (admins only) for all.")
    ],
    expires: Annotated[
        str | None, typer.Option(help="Lifetime, e.g. 30d (default: no expiry).")
    ] = None,
    agent: AgentOpt = None,
    workflow: WorkflowOpt = None,
    approval_role: ApprovalRoleOpt = None,
    bridge: BridgeOpt = False,
    store: StoreOpt = None,
) -> None:
    """Create an API key. The key is printed once and stored only as a hash.

    An agent key is bound to one agent (--agent) and optionally to workflows (--workflow);
    approver and admin keys decide only approvals routed to their --approval-role(s).
    """
    from warden.auth import KeyStore, Role
    from warden.store import Store, default_store_url

    try:
        if role not in {r.value for r in Role}:
            raise UsageError(f"--role {role!r}: use admin, approver, agent or auditor")
        keys = KeyStore(Store(store or default_store_url()))
        info, key = keys.create(
            name=name,
            role=role,
            tenant=tenant,
            created_by="cli",
            expires_in=_parse_duration(expires),
            agent=agent,
            workflows=workflow,
            approval_roles=approval_role,
            bridge=bridge,
        )
    except WardenError as exc:
        raise fail(str(exc)) from None
    out.print(
        f"created {info.role.value} key {info.key_id} for tenant {info.tenant!r} ({info.name})"
        + _binding(info)
    )
    out.print("store it now, it is not shown again:")
    print(key)


@keys_app.command("list")
def keys_list(store: StoreOpt = None) -> None:
    """List keys (never their secrets)."""
    from warden.auth import KeyStore
    from warden.store import Store, default_store_url

    table = Table("key id", "name", "role", "tenant", "acts as", "created", "expires", "state")
    for k in KeyStore(Store(store or default_store_url())).list():
        state = "revoked" if k.revoked_at else ("active" if k.active else "expired")
        if k.role.value == "agent" and not k.agent:
            state += " (unbound: warden keys bind)"
        table.add_row(
            k.key_id,
            k.name,
            k.role.value,
            k.tenant,
            _binding(k).removeprefix("; ") or "-",
            f"{k.created_at:%Y-%m-%d %H:%M}",
            f"{k.expires_at:%Y-%m-%d %H:%M}" if k.expires_at else "-",
            state,
        )
    out.print(table)


@keys_app.command("bind")
def keys_bind(
    key_id: Annotated[str, typer.Argument(help="The key id (from `warden keys list`).")],
    agent: Annotated[
        str | None, typer.Option(help="Agent keys: the spec's agent the key acts as.")
    ] = None,
    workflow: WorkflowOpt = None,
    approval_role: ApprovalRoleOpt = None,
    bridge: Annotated[
        bool | None,
        typer.Option("--bridge/--no-bridge", help="Approver/admin keys: a bridge, or not."),
    ] = None,
    store: StoreOpt = None,
) -> None:
    """Set what an existing key acts as, keeping its secret (keys made before keys were
    bound act on nothing until bound). Options given replace the key's current values."""
    from warden.auth import KeyStore
    from warden.store import Store, default_store_url

    try:
        info = KeyStore(Store(store or default_store_url())).bind(
            key_id, agent=agent, workflows=workflow, approval_roles=approval_role, bridge=bridge
        )
    except WardenError as exc:
        raise fail(str(exc)) from None
    out.print(f"bound {info.role.value} key {info.key_id} ({info.name}){_binding(info)}")


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id (from `warden keys list`).")],
    store: StoreOpt = None,
) -> None:
    """Revoke a key; every replica refuses it within a few seconds."""
    from warden.auth import KeyStore
    from warden.store import Store, default_store_url

    try:
        info = KeyStore(Store(store or default_store_url())).revoke(key_id)
    except WardenError as exc:
        raise fail(str(exc)) from None
    out.print(f"revoked key {info.key_id} ({info.name})")


def _api(url: str, key: str, method: str, path: str, **kw: Any) -> Any:
    import httpx

    try:
        response = httpx.request(
            method,
            url.rstrip("/") + path,
            headers={"Authorization": f"Bearer {key}"},
            timeout=65,
            **kw,
        )
    except httpx.HTTPError as exc:
        raise fail(f"cannot reach {url}: {exc}") from None
    if response.status_code >= 400:
        try:
            body = response.json()
            detail = body.get("detail") or body.get("title")
        except ValueError:
            detail = response.text[:200]
        raise fail(f"{response.status_code}: {detail}")
    return response.json()


@approvals_app.command("list")
def approvals_list(
    url: UrlOpt = "http://127.0.0.1:8000",
    api_key: KeyOpt = "",
    state: Annotated[
        str, typer.Option(help="pending, approved, rejected, expired, executed, ...")
    ] = "pending",
    role: Annotated[str | None, typer.Option(help="Only this approver role.")] = None,
    sla_class: Annotated[
        str | None, typer.Option(help="Only this SLA class (escalation.sla_classes).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines, one per approval.")] = False,
) -> None:
    """The queue, soonest deadline first: deadline, SLA class, risk, why the policy asked."""
    params: dict[str, Any] = {
        "state": state,
        "limit": 500,
        **({"role": role} if role else {}),
        **({"sla_class": sla_class} if sla_class else {}),
    }
    items: list[dict[str, Any]] = []
    while True:  # every page: the server answers at most 500 at a time
        page = _api(url, api_key, "GET", "/v1/approvals", params=params)
        items += page["items"]
        if not page.get("next"):
            break
        params["after"] = page["next"]
    if as_json:
        for a in items:
            sys.stdout.write(json.dumps(a, ensure_ascii=False) + "\n")
        return
    table = Table(
        title=f"{len(items)} {state} approval(s); `warden approvals show ID` for the full action"
    )
    table.add_column("approval", no_wrap=True)
    table.add_column("tenant")
    table.add_column("tool")
    table.add_column("role")
    table.add_column("sla")
    table.add_column("risk")
    table.add_column("deadline (UTC)", no_wrap=True)
    table.add_column("why")
    for a in items:
        table.add_row(
            a["approval_id"],
            a["tenant"],
            a["tool"],
            a["role"],
            a["sla_class"] or "default",
            f"{a['risk']:.2f}",
            a["deadline"][5:16].replace("T", " "),
            "; ".join(a["reasons"])[:80],
        )
    out.print(table)


@approvals_app.command("show")
def approvals_show(
    approval_id: str, url: UrlOpt = "http://127.0.0.1:8000", api_key: KeyOpt = ""
) -> None:
    """Everything about one approval: the exact action, evidence, reasons."""
    out.print_json(data=_api(url, api_key, "GET", f"/v1/approvals/{approval_id}"))


@approvals_app.command("approve")
def approvals_approve(
    approval_id: str,
    rationale: Annotated[str, typer.Option(help="Why (recorded on the ledger).")],
    args: Annotated[
        str | None, typer.Option(help="Edited args as JSON (re-validated, re-evaluated).")
    ] = None,
    on_behalf_of: OnBehalfOpt = None,
    url: UrlOpt = "http://127.0.0.1:8000",
    api_key: KeyOpt = "",
) -> None:
    """Approve (optionally with edited args)."""
    body: dict[str, Any] = {"decision": "approve", "rationale": rationale}
    if on_behalf_of is not None:
        body["on_behalf_of"] = on_behalf_of
    if args is not None:
        try:
            body["args"] = json.loads(args)
        except json.JSONDecodeError as exc:
            raise fail(f"--args is not JSON: {exc}") from None
    done = _api(url, api_key, "POST", f"/v1/approvals/{approval_id}/decision", json=body)
    out.print(f"{done['approval_id']}: {done['state']} by {done['decided_by']}")


@approvals_app.command("reject")
def approvals_reject(
    approval_id: str,
    rationale: Annotated[str, typer.Option(help="Why (recorded on the ledger).")],
    on_behalf_of: OnBehalfOpt = None,
    url: UrlOpt = "http://127.0.0.1:8000",
    api_key: KeyOpt = "",
) -> None:
    """Reject."""
    body: dict[str, Any] = {"decision": "reject", "rationale": rationale}
    if on_behalf_of is not None:
        body["on_behalf_of"] = on_behalf_of
    done = _api(url, api_key, "POST", f"/v1/approvals/{approval_id}/decision", json=body)
    out.print(f"{done['approval_id']}: {done['state']} by {done['decided_by']}")
