"""API keys in either store: revocation hits exactly one key and is final."""

from __future__ import annotations

import pytest

from relay.store.base import AmbiguousKeyPrefix, Store, StoreError

# Keys without '$' keep their first 6 characters as the listed prefix, so these two share "shared".
KEY_A = "shared-prefix-key-of-client-one-000000"
KEY_B = "shared-prefix-key-of-client-two-000000"


async def test_a_prefix_shared_by_two_clients_revokes_nothing(store: Store) -> None:
    _, a = await store.create_api_key(1, key=KEY_A)
    _, b = await store.create_api_key(2, key=KEY_B)
    assert a.prefix == b.prefix == "shared"

    with pytest.raises(AmbiguousKeyPrefix) as refused:
        await store.revoke_api_key("shared")
    assert refused.value.matches == 2
    with pytest.raises(AmbiguousKeyPrefix):
        await store.revoke_api_key("sh")  # a shorter prefix is just as ambiguous
    assert await store.client_for_key(KEY_A) == 1 and await store.client_for_key(KEY_B) == 2


async def test_a_prefix_of_one_key_revokes_that_key_only(store: Store) -> None:
    mine, record = await store.create_api_key(7, "mine")
    other, _ = await store.create_api_key(8, "other")
    # Generated keys are "<client>$<random>"; the listed prefix is the client and 6 random characters.
    assert record.prefix.startswith("7$") and len(record.prefix) == 8

    revoked = await store.revoke_api_key(record.prefix[:5])
    assert revoked is not None and revoked.id == record.id and revoked.revoked_at is not None
    assert await store.client_for_key(mine) is None
    assert await store.client_for_key(other) == 8
    assert await store.revoke_api_key(record.prefix) is None  # already revoked: nothing left to match


async def test_one_client_with_two_keys_is_ambiguous_too(store: Store) -> None:
    first, _ = await store.create_api_key(3)
    second, _ = await store.create_api_key(3)
    with pytest.raises(AmbiguousKeyPrefix) as refused:
        await store.revoke_api_key("3$")
    assert refused.value.matches == 2
    assert await store.client_for_key(first) == 3 and await store.client_for_key(second) == 3


async def test_revoke_by_id_and_unknown_ids(store: Store) -> None:
    await store.create_api_key(1, key=KEY_A)
    _, b = await store.create_api_key(2, key=KEY_B)
    revoked = await store.revoke_api_key(str(b.id))
    assert revoked is not None and (revoked.id, revoked.client_id) == (b.id, 2)
    assert await store.revoke_api_key(str(b.id)) is None
    assert await store.revoke_api_key("999") is None
    assert await store.revoke_api_key("") is None  # never "every key"
    assert await store.client_for_key(KEY_A) == 1


async def test_a_revoked_key_cannot_be_created_again(store: Store) -> None:
    _, record = await store.create_api_key(1, "RELAY_API_KEY", key=KEY_A)
    await store.revoke_api_key(str(record.id))
    with pytest.raises(StoreError, match="revoked"):
        await store.create_api_key(1, "RELAY_API_KEY", key=KEY_A)
    assert await store.client_for_key(KEY_A) is None
    found = await store.find_api_key(KEY_A)
    assert found is not None and found.id == record.id and found.revoked_at is not None


async def test_find_and_active_ids(store: Store) -> None:
    _, a = await store.create_api_key(1, key=KEY_A)
    _, b = await store.create_api_key(2, key=KEY_B)
    assert await store.find_api_key("no-such-key") is None
    found = await store.find_api_key(KEY_B)
    assert found is not None and (found.id, found.client_id, found.revoked_at) == (b.id, 2, None)
    assert await store.active_api_key_ids({a.id, b.id, 999}) == {a.id, b.id}
    await store.revoke_api_key(str(a.id))
    assert await store.active_api_key_ids({a.id, b.id}) == {b.id}
    assert await store.active_api_key_ids(set()) == set()
