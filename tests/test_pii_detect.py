"""PII detectors and the redactor: what is found, how it is tokenized, what is left alone."""

from __future__ import annotations

import copy

import pytest
from pii_corpus import KINDS, corpus, score

from warden.telemetry import PiiRedactor, find_pii
from warden.telemetry._detect import iban_ok, luhn_ok


def _key(tenant: str) -> bytes:
    return tenant.encode().ljust(32, b"k")


def _kinds(text: str) -> list[tuple[str, str]]:
    return [(kind, text[a:b]) for kind, a, b in find_pii(text)]


def test_seeded_corpus_meets_the_targets_per_kind() -> None:
    # The figures of benchmarks/bench_pii.py, on a smaller corpus of another seed.
    scores = score(corpus(seed=3, per_kind=120, negatives=800), find_pii)
    for kind in KINDS:
        s = scores[kind]
        assert s.recall >= 0.98, (kind, s.misses[:5])
        assert s.precision >= 0.95, (kind, s.false_hits[:5])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to Bob.Smith+orders@mail.example.co.uk.", [("email", "Bob.Smith+orders@mail.example.co.uk")]),
        ("call (415) 555-0123 or +44 20 7946 0958", [("phone", "(415) 555-0123"), ("phone", "+44 20 7946 0958")]),
        ("card 4111-1111-1111-1111 exp 12/29", [("card", "4111-1111-1111-1111")]),
        ("IBAN GB82 WEST 1234 5698 7654 32 please", [("iban", "GB82 WEST 1234 5698 7654 32")]),
        ("SSN: 123456789", [("ssn", "123456789")]),
        ("from 10.0.0.12 and 2001:db8::8a2e:370:7334", [("ipv4", "10.0.0.12"), ("ipv6", "2001:db8::8a2e:370:7334")]),
        ("password=correct-horse-9", [("credential", "correct-horse-9")]),
    ],
)
def test_finds_each_kind_in_running_text(text: str, expected: list[tuple[str, str]]) -> None:
    assert _kinds(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112",  # fails Luhn
        "IBAN GB82 WEST 1234 5698 7654 33",  # fails mod-97
        "order ORD-2024-000123 at 2024-03-15 10:22:33",
        "Warden v1.24.3 on Python 3.11.7",
        "request 550e8400-e29b-41d4-a716-446655440000",
        "total $1,234.56 incl. tax; ts 1710498153123",
        "USPS 9400 1000 0000 0000 0000 00",
    ],
)
def test_hard_negatives_hold_no_pii(text: str) -> None:
    assert _kinds(text) == []


def test_checksums() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("DE89370400440532013000") and not iban_ok("DE89370400440532013001")


def test_tokens_are_keyed_per_tenant_and_equal_for_one_value() -> None:
    r = PiiRedactor(_key)
    a1 = r.redact_text("acme", "mail sam@shop.example")
    a2 = r.redact_text("acme", "SAM@shop.example wrote")
    other = r.redact_text("globex", "mail sam@shop.example")
    token = a1.removeprefix("mail ")
    assert token.startswith("pii:email:") and a2 == f"{token} wrote"
    assert other != a1  # nothing links tenants
    # one phone number in two spellings is one token (windows and joins compare equal)
    assert r.redact_text("acme", "555-123-4567x") != r.redact_text("acme", "(555) 123-4567")
    assert r.redact_text("acme", "+1 555 123 4567") == r.redact_text("acme", "+1-555-123-4567")


def test_redact_payload_declared_fields_secret_keys_and_text() -> None:
    r = PiiRedactor(_key, fields=["args.customer_id", "result.*.name"])
    payload = {
        "tool": "refund",
        "args": {"customer_id": 4711, "note": "card 4111 1111 1111 1111", "amount": 10.5},
        "result": {"rows": [{"name": "Sam Ek"}], "count": 1},
        "headers": {"Authorization": "Basic dXNlcjpwYXNz", "x": "ok"},
    }
    before = copy.deepcopy(payload)
    out = r.redact("t", payload)
    assert payload == before  # never mutated
    assert out["tool"] == "refund" and out["args"]["amount"] == 10.5
    assert out["args"]["customer_id"].startswith("pii:field:")
    assert out["args"]["note"].startswith("card pii:card:")
    assert out["result"]["rows"][0]["name"].startswith("pii:field:") and out["result"]["count"] == 1
    assert out["headers"]["Authorization"].startswith("pii:credential:")
    assert out["headers"]["x"] == "ok"
    assert r.redact("t", out) == out  # tokens are not tokenized again


def test_payload_without_pii_is_returned_as_is() -> None:
    r = PiiRedactor(_key)
    payload = {"action_id": "run_1.2", "args": {"order_id": "ORD-2024-000123", "amount": 12.5}}
    assert r.redact("t", payload) is payload


def test_only_the_detectors_the_spec_names_run() -> None:
    r = PiiRedactor(_key, kinds=["email"])
    out = r.redact_text("t", "sam@shop.example 4111 1111 1111 1111")
    assert out.startswith("pii:email:") and out.endswith(" 4111 1111 1111 1111")


def test_kept_values_are_handed_over_once_and_credentials_never() -> None:
    kept: list[tuple[str, str, str, str]] = []
    r = PiiRedactor(_key, keep=lambda *a: kept.append(a))
    r.redact("t", {"a": "sam@shop.example", "b": "sam@shop.example", "c": "api_key=abcdef123456"})
    assert [(k[2], k[3]) for k in kept] == [("sam@shop.example", "email")]
