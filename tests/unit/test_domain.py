"""Pure rules: keys, bearer parsing, allowed models, rate windows, ids."""

from __future__ import annotations

from studio.domain.ids import new_id
from studio.domain.keys import KEY_PREFIX, bearer_token, generate_key, hash_key, same_hash
from studio.domain.limits import model_allowed, rate_window


def test_generated_keys_are_random_and_hash_to_their_stored_form() -> None:
    first, second = generate_key(), generate_key()
    assert first.secret != second.secret
    assert first.secret.startswith(KEY_PREFIX) and len(first.secret) > 40
    assert hash_key(first.secret) == first.key_hash
    assert first.secret not in first.key_hash
    assert first.hint.endswith(first.secret[-4:])
    assert same_hash(first.key_hash, hash_key(first.secret))
    assert not same_hash(first.key_hash, second.key_hash)


def test_bearer_token() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer   abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer") is None
    assert bearer_token(None) is None


def test_model_allowed_patterns() -> None:
    assert model_allowed(["*"], "meta-llama/Llama-3.1-8B")
    assert model_allowed(["meta-llama/*"], "meta-llama/Llama-3.1-8B")
    assert not model_allowed(["meta-llama/*"], "mistralai/Mistral-7B")
    assert not model_allowed([], "anything")


def test_rate_window() -> None:
    assert rate_window(120.0) == (2, 60)
    assert rate_window(179.5) == (2, 1)


def test_ids_are_prefixed_and_unique() -> None:
    ids = {new_id("client") for _ in range(1000)}
    assert len(ids) == 1000 and all(i.startswith("client-") for i in ids)
