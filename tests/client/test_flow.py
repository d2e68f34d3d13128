"""FlowControl and Backoff: the defaults users rely on and the bounds they promise."""

from __future__ import annotations

import dataclasses

import pytest

from paynotify_client import Backoff, FlowControl


def test_flow_control_defaults_are_documented_values() -> None:
    flow = FlowControl()
    assert flow.max_in_flight == 16
    assert flow.callback_threads is None
    assert flow.threads == 16


def test_flow_control_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        FlowControl().max_in_flight = 3  # type: ignore[misc]


def test_callback_threads_never_exceed_max_in_flight() -> None:
    assert FlowControl(max_in_flight=2, callback_threads=8).threads == 2
    assert FlowControl(max_in_flight=8, callback_threads=3).threads == 3


@pytest.mark.parametrize("kwargs", [{"max_in_flight": 0}, {"callback_threads": 0}])
def test_flow_control_refuses_zero(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        FlowControl(**kwargs)


def test_backoff_doubles_up_to_the_maximum_without_jitter() -> None:
    backoff = Backoff(initial=0.1, maximum=1.0, multiplier=2.0, jitter=0.0)
    delays = [backoff.delay(n) for n in range(1, 8)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])


def test_backoff_jitter_only_shortens_and_stays_bounded() -> None:
    backoff = Backoff(initial=1.0, maximum=4.0, jitter=0.5)
    assert backoff.delay(3, rand=lambda: 0.0) == pytest.approx(4.0)
    assert backoff.delay(3, rand=lambda: 0.999999) == pytest.approx(2.0, rel=1e-5)
    assert backoff.delay(10_000, rand=lambda: 0.5) == pytest.approx(3.0)


@pytest.mark.parametrize(
    "kwargs",
    [{"initial": 0}, {"initial": 5, "maximum": 1}, {"multiplier": 0.5}, {"jitter": 1.5}],
)
def test_backoff_refuses_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)
