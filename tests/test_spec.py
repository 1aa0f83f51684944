"""Loading specs: every error names the file, the line, the field path, expected and found."""

from __future__ import annotations

import pytest

from warden.errors import SpecError
from warden.policy import Policy
from warden.spec import Tier, load_spec_text

GOOD = """\
name: wf
version: "2"
owner: me@example.com
tier: draft
tools:
  lookup: {effect: read}
policies:
  - name: r1
    when: tool.name == "lookup" && args.n > 3
    effect: deny
    reason: too many
"""


def _issues(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        loaded = load_spec_text(text, "wf.yaml")
        Policy(loaded)
    return [str(i) for i in info.value.issues]


def test_good_spec_loads_with_a_stable_fingerprint() -> None:
    a = load_spec_text(GOOD, "wf.yaml")
    reformatted = GOOD.replace("{effect: read}", "\n    effect: read")
    b = load_spec_text(reformatted, "wf.yaml")
    assert a.spec.tier is Tier.DRAFT
    assert a.fingerprint == b.fingerprint  # formatting does not change the fingerprint
    c = load_spec_text(GOOD.replace("n > 3", "n > 4"), "wf.yaml")
    assert c.fingerprint != a.fingerprint


def test_unknown_key_is_an_error_with_its_line_and_a_suggestion() -> None:
    issues = _issues(GOOD.replace("tier: draft", "tier: draft\npolcies: []"))
    assert issues == ["wf.yaml:5: polcies: unknown key 'polcies' (did you mean 'policies'?)"]


def test_wrong_value_names_expected_and_found() -> None:
    issues = _issues(GOOD.replace("effect: deny", "effect: maybe"))
    assert len(issues) == 1
    assert issues[0].startswith("wf.yaml:10: policies[0].effect: invalid value")
    assert "'allow'" in issues[0] and "found 'maybe'" in issues[0]


def test_every_error_is_reported_not_just_the_first() -> None:
    text = GOOD.replace('version: "2"', "").replace("tier: draft", "tier: sometimes")
    text += "limits: {max_steps: 0}\n"
    issues = _issues(text)
    assert any("version: required field is missing" in i for i in issues)
    assert any(i.startswith("wf.yaml:4: tier") for i in issues)
    assert any("limits.max_steps" in i and "found 0" in i for i in issues)


def test_cel_syntax_error_points_at_the_line_inside_a_block_scalar() -> None:
    text = GOOD.replace(
        'when: tool.name == "lookup" && args.n > 3',
        'when: |\n      tool.name == "lookup" &&\n      args.n > > 3',
    )
    issues = _issues(text)
    assert len(issues) == 1
    assert issues[0].startswith("wf.yaml:11: policies[0].when: CEL:")


def test_unknown_identifier_in_a_rule_is_reported_at_load() -> None:
    issues = _issues(GOOD.replace("args.n > 3", "argz.n > 3"))
    assert len(issues) == 1 and "wf.yaml:9" in issues[0] and "argz" in issues[0]


def test_undeclared_window_fact_and_tool_are_reported() -> None:
    text = GOOD.replace("args.n > 3", "window.w > 1 && facts.f.x == 1")
    issues = _issues(text)
    assert any("window 'w'" in i for i in issues)
    assert any("fact 'f'" in i for i in issues)
    issues = _issues(GOOD.replace('tool.name == "lookup"', 'tool.name == "lokup"'))
    assert any("found 'lokup'" in i for i in issues)


def test_yaml_syntax_error_has_a_line() -> None:
    issues = _issues(GOOD + "  - : [\n")
    assert issues[0].startswith("wf.yaml:") and "not valid YAML" in issues[0]


def test_duplicate_keys_are_errors() -> None:
    issues = _issues(GOOD.replace("owner: me@example.com", "owner: a\nowner: b"))
    assert issues == ["wf.yaml:4: owner: duplicate key"]


def test_durations_parse() -> None:
    loaded = load_spec_text(GOOD + "escalation: {sla: 90s, approver_roles: [a]}\n", "wf.yaml")
    assert loaded.spec.escalation.sla.total_seconds() == 90
    issues = _issues(GOOD + "escalation: {sla: soon}\n")
    assert "escalation.sla" in issues[0] and "duration" in issues[0]
    issues = _issues(GOOD + "escalation: {sla: 99999999999999999d}\n")  # overflows timedelta
    assert "escalation.sla" in issues[0] and "duration" in issues[0]
