"""Load-time type checking of rules, facts and windows against the tools they govern.

Each mistake below once passed `warden validate` and then misbehaved on every call: a
window that never counted (failing open), rules and facts that failed closed. Now each is
a load error naming its line.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from warden import Gateway, tool
from warden.errors import SpecError, SpecIssue
from warden.policy._context import CONTEXT_TYPES
from warden.policy._typecheck import check_policy
from warden.policy._types import ListT, MapT, Prim, UnionT, parse_type
from warden.results import Allowed
from warden.spec import load_spec_text
from warden.tools import ToolRegistry

SPEC = """\
name: access
version: "1"
owner: tests@example.com
tier: autonomous
agents:
  bot: {scopes: []}
tools:
  lookup_user: {effect: read}
  grant_role: {effect: identity}
  refund: {effect: money}
  webhook: {effect: write, schema: any}
facts:
  user:
    tool: lookup_user
    args: {user_id: args.user_id}
windows:
  grants_per_requester:
    tool: grant_role
    group_by: requester
    period: 24h
  refunded_today:
    tool: refund
    aggregate: sum
    field: amount
    period: 24h
policies:
  - name: admin_needs_approval
    when: tool.name == "grant_role" && args.role == "admin"
    effect: require_approval
    reason: admin grants are reviewed
    approvers: security
  - name: at_most_5_grants
    when: tool.name == "grant_role" && window.grants_per_requester >= 5
    effect: deny
    reason: too many grants
  - name: only_active_users
    when: tool.name == "grant_role" && !facts.user.active
    effect: deny
    reason: the user is not active
  - name: big_refunds
    when: tool.name == "refund" && window.refunded_today + args.amount > 500.0
    effect: require_approval
    reason: big refunds are reviewed
    approvers: finance
escalation:
  approver_roles: [security, finance]
"""


class User(BaseModel):
    id: str
    role: str
    active: bool


def tools() -> list[Any]:
    @tool
    def lookup_user(user_id: str) -> User:
        return User(id=user_id, role="viewer", active=True)

    @tool(effect="identity")
    def grant_role(user_id: str, role: str, requester: str) -> dict[str, str]:
        return {"granted": role}

    @tool(effect="money")
    def refund(
        order_id: str,
        amount: float,
        note: str | None = None,
        meta: dict[str, Any] | None = None,
        fee: Decimal | None = None,
    ) -> dict[str, Any]:
        return {"refunded": amount}

    def webhook(url, payload):  # type: ignore[no-untyped-def]  # schema: any, on purpose
        return {"sent": True}

    return [lookup_user, grant_role, refund, webhook]


def issues(text: str, store: str = "sqlite://") -> list[SpecIssue]:
    """What building a gateway from ``text`` reports: [] if it builds."""
    try:
        loaded = load_spec_text(text, "access.yaml")
        declared = [fn for fn in tools() if fn.__name__ in loaded.spec.tools]
        Gateway(loaded, declared, store=store).close()
    except SpecError as exc:
        return list(exc.issues)
    return []


def line_of(text: str, needle: str) -> int:
    (index,) = [i for i, line in enumerate(text.splitlines()) if needle in line]
    return index + 1


def edit(old: str, new: str, text: str = SPEC) -> str:
    assert text.count(old) == 1
    return text.replace(old, new)


def test_the_valid_spec_builds_a_gateway() -> None:
    assert issues(SPEC) == []


def test_the_demo_spec_passes_with_its_tools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from warden.demo import example_dir, serve_tools

    monkeypatch.chdir(tmp_path)  # serve_tools seeds its helpdesk under ./.warden/
    loaded = load_spec_text((example_dir() / "workflow.yaml").read_text(), "workflow.yaml")
    assert check_policy(loaded, ToolRegistry.build(loaded, serve_tools())) == []


# -- the silent mistakes --------------------------------------------------------------


def test_a_window_grouped_by_a_parameter_the_tool_lacks() -> None:
    text = edit("group_by: requester", "group_by: requestor")
    (issue,) = issues(text)
    assert issue.line == line_of(text, "group_by: requestor")
    assert issue.path == "windows.grants_per_requester.group_by"
    assert "'requestor' is not an argument of tool 'grant_role'" in issue.message
    assert issue.expected is not None and "did you mean 'requester'" in issue.expected


def test_a_misspelt_argument() -> None:
    text = edit('args.role == "admin"', 'args.rol == "admin"')
    (issue,) = issues(text)
    assert issue.line == line_of(text, "args.rol")
    assert "'args.rol' does not exist" in issue.message
    assert "grant_role's arguments" in issue.message and "admin_needs_approval" in issue.message
    assert issue.expected is not None and "did you mean 'role'" in issue.expected


def test_a_count_compared_with_a_string() -> None:
    text = edit("window.grants_per_requester >= 5", 'window.grants_per_requester >= "5"')
    (issue,) = issues(text)
    assert issue.line == line_of(text, 'window.grants_per_requester >= "5"')
    assert "window.grants_per_requester is an int" in issue.message
    assert '"5" is a string' in issue.message


def test_a_number_argument_compared_with_a_string() -> None:
    text = edit("args.amount > 500.0", 'args.amount > "500"')
    (issue,) = issues(text)
    assert issue.line == line_of(text, 'args.amount > "500"')
    assert "'>' cannot order these" in issue.message


def test_a_run_field_that_is_not_in_the_context() -> None:
    """``run.end_user`` once was the example (it is in the context now): a field the run
    does not have."""
    text = edit('args.role == "admin"', 'args.role == "admin" && run.requester != principal.agent')
    (issue,) = issues(text)
    assert issue.line == line_of(text, "run.requester")
    assert "'run.requester' does not exist" in issue.message
    assert issue.expected is not None and "'task_type'" in issue.expected


def test_a_fact_argument_the_tool_does_not_take_names_the_rules_using_it() -> None:
    text = edit("args: {user_id: args.user_id}", "args: {id: args.user_id}")
    found = issues(text)
    assert [i.path for i in found] == ["facts.user.args", "facts.user.args.id"]
    assert {i.line for i in found} == {line_of(text, "args: {id: args.user_id}")}
    unknown = found[1]
    assert "lookup_user has no parameter 'id'" in unknown.message
    assert "only_active_users" in unknown.message and "fact_error" in unknown.message
    assert "needs the parameter 'user_id'" in found[0].message


def test_an_approver_role_outside_the_escalation_chain() -> None:
    text = edit("approvers: finance", "approvers: finanse")
    (issue,) = issues(text)
    assert issue.line == line_of(text, "approvers: finanse")
    assert "not in 'escalation.approver_roles'" in issue.message
    assert issue.expected is not None and "did you mean 'finance'" in issue.expected


# -- more of the same family ------------------------------------------------------------


def test_a_fact_field_is_checked_against_the_tools_output_schema() -> None:
    text = edit("!facts.user.active", "!facts.user.activ")
    (issue,) = issues(text)
    assert issue.line == line_of(text, "facts.user.activ")
    assert "no field 'activ' in lookup_user's output" in issue.message
    mistyped = edit("!facts.user.active", "facts.user.active > 0")
    (issue,) = issues(mistyped)
    assert "facts.user.active is a bool" in issue.message


def test_a_fact_argument_of_the_wrong_type() -> None:
    text = edit("args: {user_id: args.user_id}", "args: {user_id: size(args.role)}")
    (issue,) = issues(text)
    assert issue.path == "facts.user.args.user_id"
    expected = "lookup_user takes a string as 'user_id', and this gives an int"
    assert expected in issue.message


def test_summing_a_parameter_that_is_not_a_number() -> None:
    text = edit("field: amount", "field: note")
    (issue,) = issues(text)
    assert issue.line == line_of(text, "field: note")
    assert "'sum' aggregates numbers" in issue.message


def test_a_value_the_context_never_holds() -> None:
    text = edit('tool.name == "refund" &&', 'tool.effect == "mony" &&')
    (issue,) = issues(text)
    assert issue.line == line_of(text, 'tool.effect == "mony"')
    assert issue.expected is not None and "did you mean 'money'" in issue.expected


def test_has_of_a_field_that_cannot_exist() -> None:
    text = edit('args.role == "admin"', 'has(args.roles) && args.role == "admin"')
    (issue,) = issues(text)
    assert "has(args.roles) is always false" in issue.message


def test_serialize_on_reads_the_tools_own_arguments() -> None:
    text = edit("  refund: {effect: money}", "  refund: {effect: money, serialize_on: args.order}")
    (issue,) = issues(text)
    assert issue.line == line_of(text, "serialize_on: args.order")
    assert "no field 'order' in refund's arguments" in issue.message
    fine = edit(
        "  refund: {effect: money}", "  refund: {effect: money, serialize_on: args.order_id}"
    )
    assert issues(fine) == []


def test_every_mistake_is_reported_in_one_pass() -> None:
    text = edit("group_by: requester", "group_by: requestor")
    text = edit('args.role == "admin"', 'args.rol == "admin"', text)
    text = edit("approvers: finance", "approvers: finanse", text)
    found = issues(text)
    assert [i.line for i in found] == [
        line_of(text, "group_by: requestor"),
        line_of(text, "args.rol"),
        line_of(text, "approvers: finanse"),
    ]


def test_compile_errors_and_type_errors_come_together() -> None:
    text = edit('args.role == "admin"', 'args.rol == "admin"')
    text = edit("window.grants_per_requester >= 5", "window.grants_per_requester >= >", text)
    found = issues(text)
    assert [i.line for i in found] == [line_of(text, "args.rol"), line_of(text, ">= >")]
    assert "CEL:" in found[1].message


# -- which tools a rule sees ----------------------------------------------------------------


RULE = """\
  - name: probe
    when: {when}
    effect: deny
    reason: probe
"""


def with_rule(when: str, extra: str = "", text: str = SPEC) -> str:
    return edit("policies:\n", "policies:\n" + RULE.format(when=when) + extra, text)


def test_a_pinned_rule_sees_only_its_tools_arguments() -> None:
    # 'requester' is grant_role's: a rule pinned to refund cannot read it
    (issue,) = issues(with_rule("""'tool.name == "refund" && args.requester == "x"'"""))
    assert "no field 'requester' in refund's arguments" in issue.message
    (issue,) = issues(with_rule("""'args.requester == "x"'""", "    tools: [refund]\n"))
    assert "no field 'requester' in refund's arguments" in issue.message
    # either side of any && narrows, so a disjunction of pinned branches is checked too
    (issue,) = issues(
        with_rule(
            """'(tool.name == "refund" && args.amount > 5.0) || """
            """(tool.name == "lookup_user" && args.amount > 5.0)'"""
        )
    )
    assert "no field 'amount' in lookup_user's arguments" in issue.message


def test_an_unpinned_rule_sees_the_union_of_every_tool() -> None:
    typed = edit("  webhook: {effect: write, schema: any}\n", "")
    assert issues(with_rule("""'args.requester == "x" || args.amount > 5.0'""", text=typed)) == []
    (issue,) = issues(with_rule("""'args.requestor == "x"'""", text=typed))
    assert "'args.requestor' does not exist" in issue.message
    assert "any of" in issue.message and "refund's arguments" in issue.message
    # a 'schema: any' tool may take any argument: with it in the union, nothing is certain
    assert issues(with_rule("""'args.requestor == "x"'""")) == []


def test_schema_any_and_map_typed_arguments_are_not_checked() -> None:
    assert issues(with_rule("""'tool.name == "webhook" && args.anything > "x"'""")) == []
    assert issues(with_rule("""'tool.name == "refund" && args.meta.whatever.deeper == 1'""")) == []
    # but the typed parts of the same tool still are
    (issue,) = issues(with_rule("""'tool.name == "refund" && args.note > 1'"""))
    assert "args.note is a string | null" in issue.message


def test_argument_types_are_the_values_rules_see() -> None:
    # a Decimal reaches rules as a number (its JSON Schema says "number or string")
    (issue,) = issues(with_rule("""'tool.name == "refund" && args.fee > "1"'"""))
    assert "args.fee is a double | null" in issue.message
    assert issues(with_rule("""'tool.name == "refund" && args.fee > 1'""")) == []


def test_a_hand_written_input_schema_is_read() -> None:
    schema = (
        "input_schema: {type: object, additionalProperties: false, "
        "properties: {url: {type: string}, payload: {type: object}}}"
    )
    typed = edit("schema: any", schema)
    (issue,) = issues(with_rule("""'tool.name == "webhook" && args.urll == "x"'""", text=typed))
    assert "no field 'urll' in webhook's arguments" in issue.message
    (issue,) = issues(with_rule("""'tool.name == "webhook" && args.url > 1'""", text=typed))
    assert "args.url is a string" in issue.message
    # without additionalProperties: false, other arguments may be given
    open_schema = typed.replace("additionalProperties: false, ", "")
    assert issues(with_rule("""'tool.name == "webhook" && has(args.x)'""", text=open_schema)) == []


def test_names_the_spec_declares() -> None:
    (issue,) = issues(with_rule("""'tool.effect == "money" || tool.name == "refnd"'"""))
    assert "tool.name is never 'refnd'" in issue.message
    (issue,) = issues(with_rule("""'principal.agent == "bott"'"""))
    assert issue.expected is not None and "did you mean 'bot'" in issue.expected


def test_comprehension_variables_take_the_element_type() -> None:
    text = with_rule("""'principal.scopes.exists(s, s > 1)'""")
    (issue,) = issues(text)
    assert "s is a string" in issue.message


# -- the CLI ---------------------------------------------------------------------------------


TOOLS_MODULE = """
from typing import Any
from pydantic import BaseModel
from warden import tool


class User(BaseModel):
    id: str
    role: str
    active: bool


def tools() -> list[Any]:
    @tool
    def lookup_user(user_id: str) -> User:
        return User(id=user_id, role="viewer", active=True)

    @tool(effect="identity")
    def grant_role(user_id: str, role: str, requester: str) -> dict[str, str]:
        return {}

    @tool(effect="money")
    def refund(order_id: str, amount: float, note: str | None = None) -> dict[str, Any]:
        return {}

    def webhook(url, payload):
        return {}

    return [lookup_user, grant_role, refund, webhook]
"""


def warden(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "warden", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "access_tools.py").write_text(TOOLS_MODULE)
    yield tmp_path


def test_validate_with_tools_reports_each_mistake_on_its_line(project: Path) -> None:
    text = edit("group_by: requester", "group_by: requestor")
    text = edit('args.role == "admin"', 'args.rol == "admin"', text)
    (project / "access.yaml").write_text(text)
    done = warden("validate", "access.yaml", "--tools", "access_tools.py:tools", cwd=project)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"error access.yaml:{line_of(text, 'group_by: requestor')}: ")
    assert lines[1].startswith(f"error access.yaml:{line_of(text, 'args.rol')}: policies[0].when")
    assert "Traceback" not in done.stderr


def test_validate_with_tools_passes_a_good_spec_and_without_says_what_it_skipped(
    project: Path,
) -> None:
    (project / "access.yaml").write_text(SPEC)
    done = warden("validate", "access.yaml", "--tools", "access_tools.py:tools", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "not checked against" not in done.stdout
    (project / "typo.yaml").write_text(edit('args.role == "admin"', 'args.rol == "admin"'))
    unchecked = warden("validate", "typo.yaml", cwd=project)
    assert unchecked.returncode == 0, unchecked.stderr
    (note,) = [ln for ln in unchecked.stdout.splitlines() if "not checked against" in ln]
    assert "--tools" in note


def test_validate_without_tools_still_checks_roles_and_context(project: Path) -> None:
    text = edit("approvers: finance", "approvers: finanse")
    text = edit("window.grants_per_requester >= 5", "run.requester == 5", text)
    (project / "access.yaml").write_text(text)
    done = warden("validate", "access.yaml", cwd=project)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert [ln.split(":")[1] for ln in lines] == [
        str(line_of(text, "run.requester")),
        str(line_of(text, "approvers: finanse")),
    ]


def test_validate_with_a_broken_factory_is_one_line(project: Path) -> None:
    (project / "access.yaml").write_text(SPEC)
    done = warden("validate", "access.yaml", "--tools", "missing.py:tools", cwd=project)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "missing.py" in done.stderr
    assert "Traceback" not in done.stderr


# -- the context table is what the gateway builds --------------------------------------------


def _cel_type_test(path: str, text: str) -> str:
    t = parse_type(text)
    names = {
        "null": "null_type",
        "timestamp": 'type(timestamp("2000-01-01T00:00:00Z"))',
        "duration": 'type(duration("1s"))',
    }
    options = t.members if isinstance(t, UnionT) else (t,)
    tests = []
    for option in options:
        if isinstance(option, Prim):
            tests.append(f"type({path}) == {names.get(option.name, option.name)}")
        elif isinstance(option, ListT):
            tests.append(f"type({path}) == list")
        elif isinstance(option, MapT):
            tests.append(f"type({path}) == map")
    return "(" + " || ".join(tests) + ")"


def test_the_context_table_matches_what_rules_see_at_run_time(tmp_path: Path) -> None:
    """A rule that holds only if every path of the table exists with its type, and each
    context value has exactly the table's fields: a field added to the gateway but not to
    the table (or the reverse) fails this test."""
    roots: dict[str, int] = {}
    for path in CONTEXT_TYPES:
        if "." in path:
            roots[path.split(".")[0]] = roots.get(path.split(".")[0], 0) + 1
    checks = [_cel_type_test(path, text) for path, text in CONTEXT_TYPES.items()]
    checks += [f"size({root}) == {count}" for root, count in roots.items()]
    text = with_rule("'!(" + " && ".join(checks) + ")'")
    gateway = Gateway(
        load_spec_text(text, "access.yaml"), tools(), store=f"sqlite:///{tmp_path / 'w.db'}"
    )
    with gateway.sync() as gw, gw.run(tenant="t", agent="bot", task="probe") as run:
        result = run.call("lookup_user", {"user_id": "u1"})
    assert isinstance(result, Allowed), result
