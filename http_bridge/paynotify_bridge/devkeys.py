"""A development key pair that plays "Alipay's key" for `paynotify run` and `paynotify send-test`.

Created on first use in a local folder (the private key readable by its owner only) and reused
afterwards, so the bridge and the simulator agree without any setup. Never for production: a real
bridge verifies with the public key Alipay hands out.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from paynotify_bridge.signature import generate_key_pair

__all__ = [
    "DEFAULT_DEV_KEYS_FOLDER",
    "DEV_CLIENT_ID",
    "DEV_KEY_VERSION",
    "PRIVATE_KEY_NAME",
    "PUBLIC_KEY_NAME",
    "DevKeys",
    "ensure_dev_keys",
]

logger = logging.getLogger(__name__)

DEFAULT_DEV_KEYS_FOLDER: Final = Path("data") / "dev-keys"
PRIVATE_KEY_NAME: Final = "alipay-dev-private.pem"
PUBLIC_KEY_NAME: Final = "alipay-dev-public.pem"
# The Client-Id the development bridge allows and the simulator sends.
DEV_CLIENT_ID: Final = "SANDBOX_PAYNOTIFY_DEV"
DEV_KEY_VERSION: Final = "1"


@dataclass(frozen=True)
class DevKeys:
    private_path: Path
    public_path: Path


def ensure_dev_keys(folder: Path) -> DevKeys:
    """The development pair in `folder`, created there (private key mode 0600) when absent."""
    keys = DevKeys(folder / PRIVATE_KEY_NAME, folder / PUBLIC_KEY_NAME)
    if keys.private_path.exists() and keys.public_path.exists():
        return keys
    folder.mkdir(parents=True, exist_ok=True)
    private_pem, public_pem = generate_key_pair()
    _write_private(keys.private_path, private_pem)
    keys.public_path.write_bytes(public_pem)
    logger.info("created a development key pair in %s (not for production)", folder)
    return keys


def _write_private(path: Path, data: bytes) -> None:
    # Created with 0600 from the start, so the key is never readable by others, even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)
