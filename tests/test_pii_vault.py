"""The vault on both backends: tenant keys, sealing, kept values and recorded reads,
shredding."""

from __future__ import annotations

import pytest

from warden.store import Store
from warden.telemetry import PiiRedactor, Vault, VaultError, new_master_key
from warden.telemetry._vault import _unb64, master_key


@pytest.fixture
def store(store_url: str) -> Store:
    st = Store(store_url)
    yield st  # type: ignore[misc]
    st.dispose()


def test_seal_opens_for_its_tenant_only(store: Store) -> None:
    vault = Vault(store)
    sealed = vault.seal("acme", '{"to": "sam@shop.example"}')
    assert sealed.startswith("vault:1:1:") and "sam@" not in sealed
    assert vault.unseal("acme", sealed) == '{"to": "sam@shop.example"}'
    assert vault.unseal("acme", "not sealed") == "not sealed"  # rows from before sealing
    with pytest.raises(VaultError):
        vault.unseal("globex", sealed)  # moved to another tenant: does not open


def test_another_process_with_the_same_master_key_shares_tenant_keys(store: Store) -> None:
    a, b = Vault(store), Vault(store)
    assert a.token_key("acme") == b.token_key("acme")
    assert b.unseal("acme", a.seal("acme", "x")) == "x"


def test_a_wrong_master_key_is_named_not_a_garbled_value(store: Store) -> None:
    Vault(store).token_key("acme")
    other = Vault(store, _unb64(new_master_key()))
    with pytest.raises(VaultError, match="another master key"):
        other.token_key("acme")


def test_kept_value_is_revealed_and_the_read_recorded(store: Store) -> None:
    vault = Vault(store)
    redactor = PiiRedactor(vault.token_key, keep=vault.keep)
    token = redactor.redact_text("acme", "sam@shop.example")
    assert vault.reveal("acme", token, reader="ann", role="auditor", purpose="case 12") == (
        "sam@shop.example"
    )
    assert vault.reveal("acme", "pii:email:000000000000000000000000", reader="ann", role="auditor", purpose="x") is None
    reads = vault.reads("acme")
    assert [(r.ref, r.reader, r.role, r.purpose) for r in reads] == [(token, "ann", "auditor", "case 12")]


def test_shred_makes_sealed_values_unreadable_and_new_tokens_unlinkable(store: Store) -> None:
    vault = Vault(store)
    redactor = PiiRedactor(vault.token_key, keep=vault.keep)
    vault.on_shred.append(redactor.forget)
    before = redactor.redact_text("acme", "sam@shop.example")
    sealed = vault.seal("acme", "raw args")
    kept_by_globex = vault.seal("globex", "other tenant")

    done = vault.shred("acme", by="dpo")
    assert done == {"tenant": "acme", "generations": 1, "values": 1}
    for reader in (vault, Vault(store)):  # this process and a fresh one
        with pytest.raises(VaultError):
            reader.unseal("acme", sealed)
        assert reader.reveal("acme", before, reader="ann", role="auditor", purpose="x") is None
    assert vault.unseal("globex", kept_by_globex) == "other tenant"  # other tenants untouched
    # the tenant carries on under a new key: the same address gives another token
    after = redactor.redact_text("acme", "sam@shop.example")
    assert after.startswith("pii:email:") and after != before
    assert vault.unseal("acme", vault.seal("acme", "new")) == "new"


def test_master_key_file_is_made_once_and_reused(tmp_path: pytest.TempPathFactory) -> None:
    env = {"WARDEN_VAULT_KEY_FILE": str(tmp_path / "k" / "vault.key")}  # type: ignore[operator]
    first = master_key(env)
    assert len(first) == 32 and master_key(env) == first


@pytest.mark.parametrize("bad", ["short", "!!!not base64!!!"])
def test_a_bad_master_key_is_a_usage_error(bad: str) -> None:
    from warden.errors import UsageError

    with pytest.raises(UsageError, match="WARDEN_VAULT_KEY"):
        master_key({"WARDEN_VAULT_KEY": bad})
