"""An internal service for the benchmark: subscribes to one group and acks every delivery at once.

    python -m bench.subscriber --hub 127.0.0.1:50051 --group bench

Uses the real client library (paynotify_client.Subscriber); stops on SIGTERM/SIGINT and prints how
many deliveries it acked.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from paynotify_client import FlowControl, Message, Subscriber

__all__ = ["main"]

# The hub blocks each Publish until the ack: the stream must hold at least as many deliveries as
# the load has connections, or the subscriber's flow control, not the pipeline, sets the pace.
DEFAULT_MAX_IN_FLIGHT = 256
# Acking is instant; a few threads keep the callback from being the bottleneck without 256 of them.
DEFAULT_CALLBACK_THREADS = 4
CLOSE_TIMEOUT_S = 3.0


class AckAll:
    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self, message: Message) -> None:
        message.ack()
        with self._lock:
            self.count += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hub", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--max-in-flight", type=int, default=DEFAULT_MAX_IN_FLIGHT)
    parser.add_argument("--callback-threads", type=int, default=DEFAULT_CALLBACK_THREADS)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    flow = FlowControl(max_in_flight=args.max_in_flight, callback_threads=args.callback_threads)
    handler = AckAll()
    subscriber = Subscriber(
        args.hub, args.group, client_id=f"bench-{args.group}", flow_control=flow
    )
    future = subscriber.subscribe(handler)
    print(f"bench-subscriber subscribed to {args.group} at {args.hub}", flush=True)
    while not stop.wait(0.5):
        if future.done():
            break
    subscriber.close(CLOSE_TIMEOUT_S)
    print(f"bench-subscriber acked {handler.count}", flush=True)
    if future.done() and not stop.is_set():
        future.result()  # raises why the subscription ended
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
