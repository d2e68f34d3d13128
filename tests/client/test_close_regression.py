"""Regression: a closing subscriber must not turn new deliveries into unseen dead letters.

Closing used to nack every delivery that arrived while a callback was still busy; the hub leased it
straight back to the same closing stream, an attempt per round trip, until it was dead-lettered —
and a dead letter settles Publish, so Alipay would have been told SUCCESS for a notification no
callback ever saw.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from paynotify.v1 import hub_pb2
from paynotify_client import FlowControl, Message, Subscriber
from tests.hubkit import hub_process, make_notification, publish


def test_deliveries_arriving_while_closing_are_not_dead_lettered(tmp_path: Path) -> None:
    seen: list[str] = []
    busy_started = threading.Event()

    def callback(message: Message) -> None:
        seen.append(message.notification.payment_id)
        if message.notification.payment_id == "BUSY":
            busy_started.set()
            time.sleep(3)  # still running when close() starts
        message.ack()

    with hub_process(tmp_path, "--max-attempts", "5", groups=("billing",)) as hub:
        sub = Subscriber(
            hub.address, "billing", flow_control=FlowControl(max_in_flight=16), ack_deadline=10
        )
        sub.subscribe(callback)
        threading.Thread(
            target=publish, args=(hub.address, make_notification("BUSY")), daemon=True
        ).start()
        assert busy_started.wait(20), "the first delivery never reached the callback"
        closer = threading.Thread(target=sub.close, kwargs={"timeout": 8})
        closer.start()
        time.sleep(0.3)
        answer = publish(hub.address, make_notification("VICTIM"), timeout=4.0)
        closer.join(20)
    states = {g.group: (g.state, g.attempts) for g in answer.groups}
    assert answer.outcome == hub_pb2.PUBLISH_OUTCOME_PENDING, states
    assert states["billing"][0] != hub_pb2.DELIVERY_STATE_DEAD
    assert states["billing"][1] <= 2, f"attempts spent on a closing stream: {states}"
    assert "VICTIM" not in seen
