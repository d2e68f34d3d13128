"""Coverage-guided fuzzing (atheris, libFuzzer) of the bridge's pure parser and verifier.

Run by tests/fuzz/test_atheris.py in a subprocess (skipped when atheris is not installed), or by
hand for longer:

    .venv/bin/python tests/fuzz/atheris_harness.py -max_total_time=600 CORPUS_DIR

The first byte of an input picks the target, the rest is its input:

    0  parse_notification(body)                      only MalformedBody may come out
    1  parse_signature_header(latin-1 text)          only SignatureRejected
    2  Verifier.verify of "client-id\\nrequest-time\\nsignature\\npath\\nbody" (latin-1 text, as
       waitress hands headers and the target; the path goes through signed_path)
                                                     only SignatureRejected, or verified
    3  check_content_type(latin-1 text)              only UnsupportedMediaType

Any other exception is a crash: libFuzzer stops, prints it and writes the input to a crash file.
`--seeds DIR` writes a seed corpus (the spec's samples, a validly signed request) into DIR.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["paynotify_bridge"]):
    from paynotify_bridge.app import check_content_type, signed_path
    from paynotify_bridge.errors import MalformedBody, SignatureRejected, UnsupportedMediaType
    from paynotify_bridge.parse import parse_notification
    from paynotify_bridge.signature import (
        Verifier,
        generate_key_pair,
        load_private_key,
        parse_signature_header,
        sign,
    )
    from paynotify_bridge.simulator import builtin_samples

CLIENT_ID = "SANDBOX_5Y3A2N2YEB3002022"
_PRIVATE = load_private_key(generate_key_pair()[0])
_VERIFIER = Verifier({"1": _PRIVATE.public_key()}, [CLIENT_ID])


def test_one_input(data: bytes) -> None:
    if not data:
        return
    target, payload = data[0] % 4, data[1:]
    if target == 0:
        with contextlib.suppress(MalformedBody):
            parse_notification(payload)
    elif target == 1:
        with contextlib.suppress(SignatureRejected):
            parse_signature_header(payload.decode("latin-1"))
    elif target == 2:
        _verify(payload)
    else:
        with contextlib.suppress(UnsupportedMediaType):
            check_content_type(payload.decode("latin-1"))


def _verify(payload: bytes) -> None:
    parts = payload.split(b"\n", 4)
    client_id, request_time, signature, target, body = (parts + [b""] * 5)[:5]
    headers = {
        "Client-Id": client_id.decode("latin-1"),
        "Request-Time": request_time.decode("latin-1"),
        "Signature": signature.decode("latin-1"),
    }
    path = signed_path({"REQUEST_URI": target.decode("latin-1")})
    with contextlib.suppress(SignatureRejected):
        _VERIFIER.verify("POST", path, headers, body)


def write_seeds(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    samples = builtin_samples()
    for name, body in samples.items():
        (folder / f"parse-{name}").write_bytes(b"\x00" + body)
    body = samples["payment_result_success"]
    request_time = "2019-07-12T12:08:56.253+05:30"
    header = sign(_PRIVATE, "POST", "/alipay/notify", CLIENT_ID, request_time, body)
    (folder / "signature-header").write_bytes(b"\x01" + header.encode())
    request = b"\n".join(
        [CLIENT_ID.encode(), request_time.encode(), header.encode(), b"/alipay/notify?x=1", body]
    )
    (folder / "verify-request").write_bytes(b"\x02" + request)
    (folder / "content-type").write_bytes(b"\x03application/json; charset=UTF-8")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--seeds":
        write_seeds(Path(sys.argv[2]))
        return
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
