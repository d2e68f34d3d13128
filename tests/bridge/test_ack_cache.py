"""The acknowledged-body cache: the unit (bounds, ageing, keys) and the bridge with a real hub
(a retry of an acknowledged body is answered without the hub; nothing else is)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from paynotify_bridge.ack_cache import AckCache
from paynotify_bridge.config import BridgeConfig, ConfigError
from tests.bridge.conftest import (
    CLIENT_ID,
    SUCCESS_BODY,
    BridgeFactory,
    sample_body,
    store_counts,
    subscribed,
)
from tests.hubkit import ThreadedHub

SAMPLE = sample_body("payment_result_success")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the unit ------------------------------------------------------------------------------------


def test_keys_depend_on_every_body_byte_and_the_client_id() -> None:
    key = AckCache.key(CLIENT_ID, SAMPLE)
    assert key == AckCache.key(CLIENT_ID, bytes(SAMPLE))
    assert len(key) == 16
    assert key != AckCache.key(CLIENT_ID, SAMPLE + b" ")
    assert key != AckCache.key(CLIENT_ID, SAMPLE.replace(b"S", b"F", 1))
    assert key != AckCache.key("OTHER_CLIENT", SAMPLE)
    # The client id is length-prefixed: moving a byte between it and the body changes the key.
    assert AckCache.key("ab", b"c") != AckCache.key("a", b"bc")


def test_a_key_is_remembered_between_ttl_and_twice_ttl() -> None:
    clock = FakeClock()
    cache = AckCache(capacity=100, ttl=60, clock=clock)
    cache.add(b"early")
    clock.now += 59
    cache.add(b"late")
    clock.now += 2  # 61 s after the generation began: it becomes the previous one
    assert b"early" in cache and b"late" in cache
    clock.now += 58  # 119 s after "early", 60 after "late"
    assert b"early" in cache and b"late" in cache
    clock.now += 2  # the second rotation: both were added in the generation that ends now
    assert b"early" not in cache and b"late" not in cache
    assert len(cache) == 0


def test_an_idle_cache_forgets_everything_after_twice_ttl() -> None:
    clock = FakeClock()
    cache = AckCache(capacity=100, ttl=60, clock=clock)
    cache.add(b"k")
    clock.now += 121
    assert b"k" not in cache


def test_entries_are_bounded_by_capacity() -> None:
    cache = AckCache(capacity=10, ttl=3600, clock=FakeClock())
    keys = [i.to_bytes(4, "big") for i in range(1000)]
    for key in keys:
        cache.add(key)
        assert len(cache) <= 10
    assert keys[-1] in cache
    assert keys[0] not in cache
    # The newest capacity/2 keys at least are always remembered.
    assert all(key in cache for key in keys[-5:])


def test_concurrent_adds_and_lookups_stay_bounded_and_consistent() -> None:
    cache = AckCache(capacity=1000, ttl=3600)
    errors: list[str] = []

    def work(start: int) -> None:
        for i in range(start, start + 5000):
            key = i.to_bytes(4, "big")
            cache.add(key)
            if key not in cache:  # just added: it is in the current generation or the previous
                errors.append(f"{i} missing right after add")
            if len(cache) > 1000:
                errors.append(f"{len(cache)} entries")

    threads = [threading.Thread(target=work, args=(n * 10_000,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []


@pytest.mark.parametrize(
    ("settings", "flag"),
    [
        ({"ack_cache_size": 1}, "--ack-cache-size"),
        ({"ack_cache_size": -5}, "--ack-cache-size"),
        ({"ack_cache_size": 10**9}, "--ack-cache-size"),
        ({"ack_cache_ttl": 0}, "--ack-cache-ttl"),
        ({"ack_cache_ttl": 10**6}, "--ack-cache-ttl"),
    ],
)
def test_unworkable_settings_name_the_flag(settings: dict[str, Any], flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        BridgeConfig(insecure_skip_verification=True, listen="127.0.0.1:0", **settings)


def test_zero_turns_the_cache_off() -> None:
    config = BridgeConfig(insecure_skip_verification=True, listen="127.0.0.1:0", ack_cache_size=0)
    assert config.ack_cache_size == 0


# -- the bridge with a real hub ----------------------------------------------------------------


def test_a_retry_of_an_acknowledged_body_is_answered_without_the_hub(
    make_bridge: BridgeFactory, hub: ThreadedHub
) -> None:
    bridge = make_bridge(hub.address)
    with subscribed(hub.address) as collector:
        first = bridge.notify(SAMPLE)
        assert (first.status, first.body) == (200, SUCCESS_BODY)
        collector.next()
        assert store_counts(hub) == (1, 1)
        # Alipay's retry: the same body, a new Request-Time and so a new signature.
        retry = bridge.notify(SAMPLE, request_time="2026-12-02T10:02:00+08:00")
        assert (retry.status, retry.body) == (200, SUCCESS_BODY)
        collector.assert_nothing(within=0.5)
    assert store_counts(hub) == (1, 1)  # the retry's receipt is not in the store
    assert bridge.metric("paynotify_bridge_ack_cache_hits_total") == 1
    assert bridge.metric("paynotify_bridge_requests_total", outcome="success") == 2
    assert bridge.metric("paynotify_bridge_publish_seconds_count") == 1


def test_the_signature_of_a_retry_is_still_verified(
    make_bridge: BridgeFactory, hub: ThreadedHub
) -> None:
    bridge = make_bridge(hub.address)
    with subscribed(hub.address):
        assert bridge.notify(SAMPLE).status == 200
    bad_signature = "algorithm=RSA256,keyVersion=1,signature=AAAA"
    forged = bridge.notify(SAMPLE, headers={"Signature": bad_signature})
    assert forged.status == 401
    unknown = bridge.notify(SAMPLE, client_id="NOPE")
    assert unknown.status == 401
    assert bridge.metric("paynotify_bridge_ack_cache_hits_total") == 0


def test_a_body_not_acknowledged_is_not_remembered(
    make_bridge: BridgeFactory, hub: ThreadedHub
) -> None:
    bridge = make_bridge(hub.address, publish_timeout=0.5)
    unanswered = bridge.notify(SAMPLE)  # no subscriber: nobody acknowledges it in time
    assert unanswered.status == 503
    again = bridge.notify(SAMPLE)
    assert again.status == 503  # asked the hub again, not answered from the cache
    with subscribed(hub.address):
        assert bridge.notify(SAMPLE).status == 200
    assert store_counts(hub) == (1, 3)  # every attempt reached the hub's store
    assert bridge.metric("paynotify_bridge_ack_cache_hits_total") == 0


def test_a_body_differing_in_one_byte_goes_to_the_hub(
    make_bridge: BridgeFactory, hub: ThreadedHub
) -> None:
    bridge = make_bridge(hub.address)
    spaced = SAMPLE.rstrip() + b"\n "
    with subscribed(hub.address):
        assert bridge.notify(SAMPLE).status == 200
        assert bridge.notify(spaced).status == 200  # the same identity: deduplicated by the hub
    assert store_counts(hub) == (1, 2)
    assert bridge.metric("paynotify_bridge_ack_cache_hits_total") == 0


def test_with_the_cache_off_every_retry_reaches_the_hub(
    make_bridge: BridgeFactory, hub: ThreadedHub
) -> None:
    bridge = make_bridge(hub.address, ack_cache_size=0)
    with subscribed(hub.address):
        for _ in range(3):
            assert bridge.notify(SAMPLE).status == 200
    assert store_counts(hub) == (1, 3)
    assert bridge.metric("paynotify_bridge_ack_cache_hits_total") == 0
