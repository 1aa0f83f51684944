"""Secrets: each reference scheme, the TTL cap, the secrets file's permissions, hmac tokens,
error messages that never carry a value, and redaction of nested structures."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from warden.errors import WardenError
from warden.secrets import Redactor, Secret, SecretError, SecretResolver, verify_minted

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
VALUE = "sk_live_7Yq2hV9dPzS1xL0w"  # the credential that must never be shown
MASTER = "master-Fh3kP0wz8QmV"


def clock() -> datetime:
    return T0


def write_secrets(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_secret_error_is_a_warden_error() -> None:
    assert issubclass(SecretError, WardenError)


# -- env: -------------------------------------------------------------------------------------


def test_env_reference_resolves_with_ttl() -> None:
    resolver = SecretResolver(environ={"STRIPE_KEY": VALUE}, clock=clock)
    secret = resolver.mint("env:STRIPE_KEY", ttl=timedelta(minutes=5))
    assert secret.value == VALUE
    assert secret.ref == "env:STRIPE_KEY"
    assert secret.expires_at == T0 + timedelta(minutes=5)
    assert resolver.mint("env:STRIPE_KEY").expires_at == T0 + timedelta(hours=1)


def test_secret_repr_and_str_never_show_the_value() -> None:
    secret = SecretResolver(environ={"STRIPE_KEY": VALUE}, clock=clock).mint("env:STRIPE_KEY")
    for text in (repr(secret), str(secret), f"{secret}", repr([secret]), repr({"s": secret})):
        assert VALUE not in text
        assert "value=***" in text
    assert repr(secret).startswith("Secret(ref='env:STRIPE_KEY', value=***, expires_at=2030-01-02")


def test_env_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARDEN_TEST_SECRET_X", VALUE)
    assert SecretResolver().mint("env:WARDEN_TEST_SECRET_X").value == VALUE


@pytest.mark.parametrize(
    ("environ", "expected"),
    [({}, "STRIPE_KEY is not set"), ({"STRIPE_KEY": ""}, "STRIPE_KEY is empty")],
)
def test_env_missing_or_empty(environ: dict[str, str], expected: str) -> None:
    with pytest.raises(SecretError) as info:
        SecretResolver(environ=environ).mint("env:STRIPE_KEY")
    message = str(info.value)
    assert "env:STRIPE_KEY" in message
    assert expected in message
    assert "set STRIPE_KEY" in message


# -- file: ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("secrets.yaml", f"STRIPE_KEY: {VALUE}\nOTHER: 'x-other-value'\n"),
        ("secrets.json", json.dumps({"STRIPE_KEY": VALUE, "OTHER": "x-other-value"})),
    ],
)
def test_file_reference_yaml_and_json(tmp_path: Path, name: str, text: str) -> None:
    path = write_secrets(tmp_path / name, text)
    resolver = SecretResolver(path, environ={}, clock=clock)
    secret = resolver.mint("file:STRIPE_KEY", ttl=timedelta(seconds=30))
    assert secret.value == VALUE
    assert secret.expires_at == T0 + timedelta(seconds=30)
    assert resolver.mint("file:OTHER").value == "x-other-value"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = write_secrets(tmp_path / "secrets.yaml", f"STRIPE_KEY: {VALUE}\n", mode)
    with pytest.raises(SecretError) as info:
        SecretResolver(path, environ={}).mint("file:STRIPE_KEY")
    message = str(info.value)
    assert f"chmod 600 {path}" in message
    assert f"{mode:03o}" in message
    assert VALUE not in message
    path.chmod(0o600)
    assert SecretResolver(path, environ={}).mint("file:STRIPE_KEY").value == VALUE


def test_file_missing_key_empty_value_and_no_file(tmp_path: Path) -> None:
    path = write_secrets(tmp_path / "secrets.yaml", f"STRIPE_KEY: {VALUE}\nEMPTY: ''\nBLANK:\n")
    resolver = SecretResolver(path, environ={})
    with pytest.raises(SecretError, match="key GITHUB_TOKEN is not in") as info:
        resolver.mint("file:GITHUB_TOKEN")
    assert "add 'GITHUB_TOKEN: <value>'" in str(info.value)
    for name in ("EMPTY", "BLANK"):
        with pytest.raises(SecretError, match=f"key {name} in .* is empty"):
            resolver.mint(f"file:{name}")
    with pytest.raises(SecretError, match="no secrets file is configured"):
        SecretResolver(environ={}).mint("file:STRIPE_KEY")
    with pytest.raises(SecretError, match="does not exist"):
        SecretResolver(tmp_path / "nope.yaml", environ={}).mint("file:STRIPE_KEY")


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("secrets.yaml", f"STRIPE_KEY: [{VALUE}\nOTHER: x\n"),  # unclosed flow sequence
        ("secrets.yaml", f"STRIPE_KEY: '{VALUE}\n"),  # unterminated quote
        ("secrets.json", f'{{"STRIPE_KEY": "{VALUE}",}}'),  # trailing comma
        ("secrets.yaml", f"- {VALUE}\n"),  # not a mapping
        ("secrets.yaml", "STRIPE_KEY: 123456789\n"),  # not a string
        ("secrets.yaml", "123456789: x-value\n"),  # not a string key
    ],
)
def test_malformed_file_errors_never_quote_its_content(
    tmp_path: Path, name: str, text: str
) -> None:
    path = write_secrets(tmp_path / name, text)
    with pytest.raises(SecretError) as info:
        SecretResolver(path, environ={}).mint("file:STRIPE_KEY")
    assert VALUE not in str(info.value)
    assert "123456789" not in str(info.value)
    assert str(path) in str(info.value)


def test_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = write_secrets(tmp_path / "secrets.yaml", "STRIPE_KEY: first-value\n")
    resolver = SecretResolver(path, environ={})
    assert resolver.mint("file:STRIPE_KEY").value == "first-value"
    write_secrets(path, "STRIPE_KEY: rotated-second-value\n")
    assert resolver.mint("file:STRIPE_KEY").value == "rotated-second-value"


# -- hmac: ------------------------------------------------------------------------------------


def _resolver_with_master(tmp_path: Path, where: str) -> SecretResolver:
    if where == "env":
        return SecretResolver(environ={"BACKEND_MASTER": MASTER}, clock=clock)
    path = write_secrets(tmp_path / "secrets.yaml", f"BACKEND_MASTER: {MASTER}\n")
    return SecretResolver(path, environ={}, clock=clock)


@pytest.mark.parametrize("where", ["env", "file"])
def test_hmac_mint_and_verify(tmp_path: Path, where: str) -> None:
    resolver = _resolver_with_master(tmp_path, where)
    secret = resolver.mint("hmac:BACKEND_MASTER", ttl=timedelta(minutes=10))
    assert MASTER not in secret.value
    claims = verify_minted(MASTER, secret.value, now=T0 + timedelta(minutes=9))
    assert claims["sub"] == "BACKEND_MASTER"
    assert claims["exp"] == int((T0 + timedelta(minutes=10)).timestamp())
    assert secret.expires_at == datetime.fromtimestamp(claims["exp"], UTC)
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16
    # A fresh token per call: same master, different tokens.
    other = resolver.mint("hmac:BACKEND_MASTER", ttl=timedelta(minutes=10))
    assert other.value != secret.value
    assert verify_minted(MASTER, other.value, now=T0)["jti"] != claims["jti"]


def test_hmac_token_format_is_what_a_backend_can_check() -> None:
    import hashlib
    import hmac

    token = SecretResolver(environ={"M": MASTER}, clock=clock).mint("hmac:M").value
    payload_part, signature_part = token.split(".")
    payload = base64.urlsafe_b64decode(payload_part + "=" * (-len(payload_part) % 4))
    signature = base64.urlsafe_b64decode(signature_part + "=" * (-len(signature_part) % 4))
    assert signature == hmac.new(MASTER.encode(), payload, hashlib.sha256).digest()
    assert set(json.loads(payload)) == {"sub", "exp", "jti"}


def test_hmac_expired_token_is_refused() -> None:
    secret = SecretResolver(environ={"M": MASTER}, clock=clock).mint(
        "hmac:M", ttl=timedelta(minutes=1)
    )
    verify_minted(MASTER, secret.value, now=T0 + timedelta(seconds=59))
    with pytest.raises(SecretError, match="expired"):
        verify_minted(MASTER, secret.value, now=T0 + timedelta(minutes=1))
    # With the real clock on both sides.
    fresh = SecretResolver(environ={"M": MASTER}).mint("hmac:M", ttl=timedelta(seconds=30))
    assert verify_minted(MASTER, fresh.value)["sub"] == "M"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_hmac_tampered_or_foreign_tokens_are_refused() -> None:
    token = SecretResolver(environ={"M": MASTER}, clock=clock).mint("hmac:M").value
    payload_part, signature_part = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload_part + "=" * (-len(payload_part) % 4)))
    later = dict(claims, exp=claims["exp"] + 86400)
    forged = _b64(json.dumps(later, sort_keys=True, separators=(",", ":")).encode())
    cases = [
        forged + "." + signature_part,  # extended expiry, old signature
        payload_part + "." + _b64(b"\0" * 32),  # wrong signature
        payload_part[:-2] + "." + signature_part,  # truncated payload
        token + ".x",  # three parts
        "not-a-token",
        "!!!." + signature_part,
    ]
    for bad in cases:
        with pytest.raises(SecretError):
            verify_minted(MASTER, bad, now=T0)
    with pytest.raises(SecretError, match="signature"):
        verify_minted("another-master-secret", token, now=T0)


def test_hmac_missing_master() -> None:
    with pytest.raises(SecretError) as info:
        SecretResolver(environ={}).mint("hmac:BACKEND_MASTER")
    assert "BACKEND_MASTER" in str(info.value)
    assert "set environment variable BACKEND_MASTER" in str(info.value)


# -- TTL and references -----------------------------------------------------------------------


def test_ttl_is_capped_at_one_hour() -> None:
    resolver = SecretResolver(environ={"K": VALUE, "M": MASTER}, clock=clock)
    assert resolver.mint("env:K", ttl=timedelta(hours=1)).expires_at == T0 + timedelta(hours=1)
    for ref in ("env:K", "hmac:M"):
        with pytest.raises(SecretError, match="exceeds the 1 hour cap"):
            resolver.mint(ref, ttl=timedelta(hours=1, seconds=1))
        with pytest.raises(SecretError, match="positive"):
            resolver.mint(ref, ttl=timedelta(0))


def test_unknown_scheme_and_bad_references() -> None:
    resolver = SecretResolver(environ={"K": VALUE})
    with pytest.raises(SecretError, match="unknown scheme 'vault'"):
        resolver.mint("vault:kv/stripe")
    with pytest.raises(SecretError, match="has no name"):
        resolver.mint("env:")
    # The secret pasted where its reference belongs is not echoed back.
    for pasted in (VALUE, "ghp:" + VALUE):
        with pytest.raises(SecretError) as info:
            resolver.mint(pasted, ttl=timedelta(hours=2))
        assert VALUE not in str(info.value)
        assert "env:NAME" in str(info.value)


def errors_of(make: Callable[[], object]) -> str:
    with pytest.raises(SecretError) as info:
        make()
    return f"{info.value} {info.value!r} {info.value.args}"


def test_errors_never_contain_the_value(tmp_path: Path) -> None:
    path = write_secrets(tmp_path / "secrets.yaml", f"STRIPE_KEY: {VALUE}\nM: {MASTER}\n", 0o644)
    resolver = SecretResolver(path, environ={"STRIPE_KEY": VALUE, "M": MASTER}, clock=clock)
    token = SecretResolver(environ={"M": MASTER}, clock=clock).mint("hmac:M").value
    texts = [
        errors_of(lambda: resolver.mint("file:STRIPE_KEY")),  # permissions
        errors_of(lambda: resolver.mint("env:STRIPE_KEY", ttl=timedelta(days=1))),
        errors_of(lambda: resolver.mint("env:MISSING")),
        errors_of(lambda: resolver.mint(VALUE)),
        errors_of(lambda: verify_minted(MASTER, token, now=T0 + timedelta(days=1))),
        errors_of(lambda: verify_minted("wrong-master", token, now=T0)),
    ]
    for text in texts:
        assert VALUE not in text
        assert MASTER not in text
        assert token not in text


# -- Redactor ---------------------------------------------------------------------------------


def test_redactor_on_nested_structures() -> None:
    redactor = Redactor()
    redactor.add(VALUE)
    redactor.add(Secret("hmac:M", "tok-abcdef.ghijkl", T0))
    data = {
        "headers": {"Authorization": f"Bearer {VALUE}"},
        "items": [VALUE, {"deep": [f"a{VALUE}b{VALUE}"]}, ("tok-abcdef.ghijkl", 3)],
        VALUE: "key is secret too",
        "n": 12,
        "ok": True,
        "none": None,
        "ratio": 0.5,
    }
    original = json.dumps(data, default=str)
    out = redactor.redact(data)
    assert out == {
        "headers": {"Authorization": "Bearer [REDACTED]"},
        "items": ["[REDACTED]", {"deep": ["a[REDACTED]b[REDACTED]"]}, ("[REDACTED]", 3)],
        "[REDACTED]": "key is secret too",
        "n": 12,
        "ok": True,
        "none": None,
        "ratio": 0.5,
    }
    assert json.dumps(data, default=str) == original  # the input is not modified
    assert VALUE not in repr(redactor)
    assert redactor.redact_text(f"error: {VALUE}") == "error: [REDACTED]"


def test_redactor_ignores_short_values_and_prefers_longest() -> None:
    redactor = Redactor()
    redactor.add("abc12")  # too short: would mangle ordinary text
    assert len(redactor) == 0
    assert redactor.redact("abc12 abc12") == "abc12 abc12"
    redactor.add("secret")
    redactor.add("secret-extended")
    assert redactor.redact("x secret-extended y secret") == "x [REDACTED] y [REDACTED]"
    redactor.add("a.b*c+d")  # regex metacharacters are literal
    assert redactor.redact("1 a.b*c+d 2 aXbbcd") == "1 [REDACTED] 2 aXbbcd"


def test_redactor_fast_path_returns_input_untouched() -> None:
    data = {"a": [1, "two"]}
    assert Redactor().redact(data) is data
