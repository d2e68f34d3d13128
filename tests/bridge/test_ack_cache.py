"""The acknowledged-body cache: the unit (bounds, ageing, keys) and the bridge with a real hub
(a retry of an acknowledged body is answered without the hub; nothing else is)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from paynotify_bridge.ack_cache import AckCache
from paynotify_bridge.config import BridgeConfig, ConfigError
from tests.bridge.conftest import (
    CLIENT_ID,
    SOON,
    SUCCESS_BODY,
    BridgeFactory,
    sample_body,
    store_counts,
    subscribed,
)
from tests.hubkit import ThreadedHub, hub_process

SAMPLE = sample_body("payment_result_success")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the unit ------------------------------------------------------------------------------------


def test_keys_depend_on_every_body_byte_and_the_client_id() -> None:
    key = AckCache.key(CLIENT_ID, SAMPLE)
    assert AckCache.key("\u00e9", b"") != AckCache.key("\udcc3\udca9", b"")
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
    cache.add(b"early", 0)
    clock.now += 59
    cache.add(b"late", 0)
    clock.now += 2  # 61 s after the generation began: it becomes the previous one
    assert cache.contains(b"early", 0) and cache.contains(b"late", 0)
    clock.now += 58  # 119 s after "early", 60 after "late"
    assert cache.contains(b"early", 0) and cache.contains(b"late", 0)
    clock.now += 2  # the second rotation: both were added in the generation that ends now
    assert not cache.contains(b"early", 0) and not cache.contains(b"late", 0)
    assert len(cache) == 0


def test_a_quiet_spell_does_not_stretch_the_bound() -> None:
    clock = FakeClock()
    cache = AckCache(capacity=100, ttl=60, clock=clock)
    cache.add(b"k", 0)
    clock.now += 119  # the first look after the first generation ended, late
    assert cache.contains(b"k", 0)
    clock.now += 6  # 125 s after it was added: more than twice the ttl
    assert not cache.contains(b"k", 0)


def test_an_idle_cache_forgets_everything_after_twice_ttl() -> None:
    clock = FakeClock()
    cache = AckCache(capacity=100, ttl=60, clock=clock)
    cache.add(b"k", 0)
    clock.now += 121
    assert not cache.contains(b"k", 0)


def test_entries_are_bounded_by_capacity() -> None:
    cache = AckCache(capacity=10, ttl=3600, clock=FakeClock())
    keys = [i.to_bytes(4, "big") for i in range(1000)]
    for key in keys:
        cache.add(key, 0)
        assert len(cache) <= 10
    assert cache.contains(keys[-1], 0)
    assert not cache.contains(keys[0], 0)
    # The newest capacity/2 keys at least are always remembered.
    assert all(cache.contains(key, 0) for key in keys[-5:])


def test_a_full_generation_starts_the_clock_again() -> None:
    clock = FakeClock()
    cache = AckCache(capacity=4, ttl=60, clock=clock)
    clock.now += 50
    cache.add(b"a", 0)
    cache.add(b"b", 0)  # full (2 keys): rotated at 50 s, so "a" and "b" are the previous ones
    clock.now += 59  # 109 s: the generation that began at 50 s has not ended
    assert cache.contains(b"a", 0) and cache.contains(b"b", 0)
    clock.now += 2  # 111 s: it ended; "a" and "b" were in the one before
    assert not cache.contains(b"a", 0) and not cache.contains(b"b", 0)


def test_a_newer_hub_generation_forgets_everything() -> None:
    cache = AckCache(capacity=100, ttl=3600, clock=FakeClock())
    cache.add(b"k", 0)
    assert cache.contains(b"k", 0)
    assert not cache.contains(b"k", 1)  # a hub restarted since: ask the hub again
    assert not cache.contains(b"k", 0)


def test_a_body_answered_across_a_hub_restart_is_not_added() -> None:
    cache = AckCache(capacity=100, ttl=3600, clock=FakeClock())
    assert not cache.contains(b"other", 3)  # another request saw generation 3
    cache.add(b"k", 2)  # this one asked the hub under generation 2
    assert not cache.contains(b"k", 3)
    cache.add(b"k", 3)
    assert cache.contains(b"k", 3)


def run_in_four_threads(work: Callable[[int], None]) -> None:
    """`work(start)` in four threads at once (starts 0, 10 000, ...); all must finish."""
    threads = [threading.Thread(target=work, args=(n * 10_000,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)


def test_concurrent_adds_and_lookups_keep_what_fits() -> None:
    cache = AckCache(capacity=100_000, ttl=3600)  # room for every key of every thread
    errors: list[str] = []

    def work(start: int) -> None:
        for i in range(start, start + 5000):
            key = i.to_bytes(4, "big")
            cache.add(key, 0)
            if not cache.contains(key, 0):
                errors.append(f"{i} missing right after add")

    run_in_four_threads(work)
    assert errors == []
    assert len(cache) == 20_000


def test_concurrent_adds_stay_within_capacity() -> None:
    cache = AckCache(capacity=1000, ttl=3600)
    sizes: list[int] = []

    def work(start: int) -> None:
        for i in range(start, start + 5000):
            cache.add(i.to_bytes(4, "big"), 0)
            sizes.append(len(cache))

    run_in_four_threads(work)
    assert len(sizes) == 20_000
    assert max(sizes) <= 1000


@pytest.mark.parametrize(
    ("settings", "flag"),
    [
        ({"ack_cache_size": 1}, r"--ack-cache-size 1: must be 0 \(off\) or between"),
        ({"ack_cache_size": -5}, "--ack-cache-size"),
        ({"ack_cache_size": 10**9}, "--ack-cache-size"),
        ({"ack_cache_ttl": 0}, "--ack-cache-ttl"),
        ({"ack_cache_ttl": 60}, "--ack-cache-ttl 60: must be between 120"),
        ({"ack_cache_ttl": 10**6}, "--ack-cache-ttl"),
    ],
)
def test_unworkable_settings_name_the_flag(settings: dict[str, Any], flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        BridgeConfig(insecure_skip_verification=True, listen="127.0.0.1:0", **settings)


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


@pytest.mark.parametrize("stop", ["terminate", "kill"])
def test_a_hub_restarted_with_a_new_required_group_gets_the_retry(
    make_bridge: BridgeFactory, tmp_path: Path, stop: str
) -> None:
    """The cache holds the answer of the hub's old configuration; a restart (graceful or kill -9)
    makes the bridge forget it, so the new group gates the retry as it would without the cache."""
    with hub_process(tmp_path, groups=("billing:required",)) as hub:
        bridge = make_bridge(hub.address, publish_timeout=1.0)
        with subscribed(hub.address):
            assert bridge.notify(SAMPLE).status == 200
        assert bridge.notify(SAMPLE).status == 200  # answered from the cache
        assert bridge.metric("paynotify_bridge_ack_cache_hits_total") == 1

        getattr(hub, stop)()
        if stop == "terminate":
            hub.wait()
        hub.args += ["--group", "audit:required"]
        hub.restart()
        _wait_until(lambda: bridge.get("/readyz").status == 200)

        # Audit has not seen it: not SUCCESS (pending, or unavailable while the bridge's streams
        # come back; either way Alipay sends it again).
        for _ in range(3):
            retry = bridge.notify(SAMPLE)
            assert retry.status == 503, retry.body
        assert bridge.metric("paynotify_bridge_ack_cache_hits_total") == 1  # none since
        with subscribed(hub.address, group="audit") as audit:
            assert audit.next().raw_json == SAMPLE
            replies = [bridge.notify(SAMPLE) for _ in range(3)]  # Alipay's next retries
        assert replies[-1].body == SUCCESS_BODY


def _wait_until(condition: Callable[[], bool], timeout: float = SOON) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)
