"""Security tests: throwaway certificates per session, fresh tokens per session, real hubs."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from paynotify_hub.config import TlsFiles
from tests.bridge.conftest import alipay_keys  # noqa: F401 (a fixture, re-exported here)
from tests.security.pki import Pki, make_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@dataclass(frozen=True)
class Tokens:
    publisher: str
    billing: str  # subscriber:billing
    audit: str  # subscriber:audit
    admin: str

    def table(self) -> dict[str, str]:
        """role -> token, for hubkit's `tokens=`."""
        return {
            "publisher": self.publisher,
            "subscriber:billing": self.billing,
            "subscriber:audit": self.audit,
            "admin": self.admin,
        }

    def all(self) -> list[str]:
        return [self.publisher, self.billing, self.audit, self.admin]


@pytest.fixture(scope="session")
def tokens() -> Tokens:
    return Tokens(*(secrets.token_hex(32) for _ in range(4)))


# A token nobody configured, well formed.
WRONG_TOKEN = "0123456789abcdef" * 4
GROUPS = ("billing", "audit:best-effort")


@pytest.fixture
def tls(pki: Pki) -> TlsFiles:
    return TlsFiles(pki.server.cert, pki.server.key)


@pytest.fixture
def mtls(pki: Pki) -> TlsFiles:
    return TlsFiles(pki.server.cert, pki.server.key, pki.ca)


@pytest.fixture
def client_tls(pki: Pki) -> grpc.ChannelCredentials:
    """Trusts the test CA; no client certificate."""
    return grpc.ssl_channel_credentials(pki.ca_pem)


@pytest.fixture
def client_mtls(pki: Pki) -> grpc.ChannelCredentials:
    """Trusts the test CA and presents the CA-signed client certificate."""
    return grpc.ssl_channel_credentials(
        pki.ca_pem, pki.client.key.read_bytes(), pki.client.cert.read_bytes()
    )


def write_token(folder: Path, name: str, token: str) -> Path:
    path = folder / name
    path.touch(mode=0o600)
    path.write_text(token + "\n")
    return path
