"""Bearer tokens per role, and who holds which. No gRPC here: `paynotify_hub.auth` applies them.

Roles (a `Principal` is a role, and for subscribers their group)::

    publisher            may call Publish (the bridge)
    subscriber:<group>   may call Subscribe, opening only <group>
    admin                may call paynotify.v1.HubAdmin (status, show, dead letters, replay);
                         admin is not a superuser: it may neither publish nor subscribe

A token's value is held in a `Secret`, whose repr and str never show it. `TokenTable.authenticate`
compares a presented token with every configured one in constant time (`hmac.compare_digest`).
Token files hold one line of printable ASCII (at least MIN_TOKEN_LENGTH characters); trailing
whitespace is dropped, a file readable by group or others is used with a warning.
"""

from __future__ import annotations

import enum
import hmac
import logging
import os
import stat
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from paynotify_hub.domain import GROUP_NAME_PATTERN
from paynotify_hub.errors import ConfigError

__all__ = [
    "ENV_ADMIN_TOKEN",
    "ENV_PUBLISHER_TOKEN",
    "ENV_SUBSCRIBER_TOKEN",
    "MIN_TOKEN_LENGTH",
    "Credential",
    "Principal",
    "Role",
    "Secret",
    "TokenTable",
    "check_token",
    "constant_time_equals",
    "parse_principal",
    "read_token_file",
    "tokens_from_env",
]

logger = logging.getLogger(__name__)

MIN_TOKEN_LENGTH: Final = 16
# Token values straight from the environment (a file named by a flag is preferred).
ENV_PUBLISHER_TOKEN: Final = "PAYNOTIFY_PUBLISHER_TOKEN"
ENV_ADMIN_TOKEN: Final = "PAYNOTIFY_ADMIN_TOKEN"
# GROUP=TOKEN[,GROUP=TOKEN...]
ENV_SUBSCRIBER_TOKEN: Final = "PAYNOTIFY_SUBSCRIBER_TOKEN"
_MASK: Final = "Secret('********')"


class Secret:
    """A secret string that does not show itself: repr, str and format print a mask."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The value itself: only for comparing or sending, never for logs or messages."""
        return self._value

    def __repr__(self) -> str:
        return _MASK

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return _MASK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return constant_time_equals(self._value, other._value)

    def __hash__(self) -> int:
        return hash(self._value)


def constant_time_equals(presented: str, expected: str) -> bool:
    """Whether two tokens are equal, in time independent of where they differ."""
    return hmac.compare_digest(presented.encode(), expected.encode())


class Role(enum.StrEnum):
    PUBLISHER = "publisher"
    SUBSCRIBER = "subscriber"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """Who a valid token speaks for; `str()` is safe to log (`subscriber:billing`)."""

    role: Role
    group: str = ""

    def __str__(self) -> str:
        return f"{self.role}:{self.group}" if self.role is Role.SUBSCRIBER else str(self.role)

    def may_subscribe(self, group: str) -> bool:
        return self.role is Role.SUBSCRIBER and group == self.group


def parse_principal(text: str) -> Principal:
    """`publisher`, `admin` or `subscriber:GROUP`."""
    role_text, _, group = text.strip().partition(":")
    try:
        role = Role(role_text)
    except ValueError:
        raise ConfigError(
            f"unknown role {role_text!r}: use publisher, admin or subscriber:GROUP"
        ) from None
    if (role is Role.SUBSCRIBER) != bool(group):
        raise ConfigError(f"invalid role {text!r}: only subscriber takes a group, subscriber:GROUP")
    if group and not GROUP_NAME_PATTERN.match(group):
        raise ConfigError(f"invalid group name {group!r} in role {text!r}")
    return Principal(role, group)


@dataclass(frozen=True)
class Credential:
    """One configured token: whom it speaks for, its value, and where it came from (a file path or
    an environment variable's name: safe to log)."""

    principal: Principal
    secret: Secret
    source: str


@dataclass(frozen=True)
class TokenTable:
    """Every configured token. Empty: the hub runs open (no token checked at all)."""

    credentials: tuple[Credential, ...] = ()

    def __post_init__(self) -> None:
        seen: dict[Secret, Credential] = {}
        for credential in self.credentials:
            other = seen.setdefault(credential.secret, credential)
            if other is not credential and other.principal != credential.principal:
                raise ConfigError(
                    f"the same token is configured for {other.principal} ({other.source}) and "
                    f"{credential.principal} ({credential.source}): give each role its own token"
                )

    @property
    def enabled(self) -> bool:
        return bool(self.credentials)

    def authenticate(self, presented: str) -> Principal | None:
        """The principal of `presented`, or None. Compares with every token, each in constant time,
        so the time taken does not tell which token (or which prefix) came close."""
        found: Principal | None = None
        for credential in self.credentials:
            if constant_time_equals(presented, credential.secret.reveal()) and found is None:
                found = credential.principal
        return found

    def principals(self) -> frozenset[Principal]:
        return frozenset(c.principal for c in self.credentials)

    def __repr__(self) -> str:
        counts = Counter(str(c.principal) for c in self.credentials)
        return "TokenTable(" + ", ".join(f"{p} x{n}" for p, n in sorted(counts.items())) + ")"

    def describe(self) -> str:
        """The roles that have tokens, e.g. `admin x1, publisher x2, subscriber:billing x1`."""
        return repr(self).removeprefix("TokenTable(").removesuffix(")") or "none"


def check_token(value: str, source: str) -> Secret:
    """`value` (trailing whitespace dropped) as a Secret; ConfigError naming `source`, never the
    value, when it cannot be a token."""
    value = value.rstrip()
    if not value:
        raise ConfigError(f"token {source} is empty")
    if not value.isascii() or not value.isprintable() or any(c.isspace() for c in value):
        raise ConfigError(
            f"token {source}: a token is one line of printable ASCII without spaces "
            "(e.g. from `openssl rand -hex 32`)"
        )
    if len(value) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"token {source} is shorter than {MIN_TOKEN_LENGTH} characters: use e.g. "
            "`openssl rand -hex 32`"
        )
    return Secret(value)


def read_token_file(path: Path) -> Secret:
    """The token in `path`; warns when group or others may read the file."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"token file {path}: cannot read it ({reason})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning(
            "token file %s is readable by group or others (mode %o): chmod 600 it",
            path,
            stat.S_IMODE(mode),
        )
    return check_token(text, str(path))


def tokens_from_env(environ: Mapping[str, str] = os.environ) -> tuple[Credential, ...]:
    """Tokens given as values in the environment: PAYNOTIFY_PUBLISHER_TOKEN,
    PAYNOTIFY_ADMIN_TOKEN and PAYNOTIFY_SUBSCRIBER_TOKEN=GROUP=TOKEN[,GROUP=TOKEN...]."""
    found: list[Credential] = []
    for name, role in ((ENV_PUBLISHER_TOKEN, Role.PUBLISHER), (ENV_ADMIN_TOKEN, Role.ADMIN)):
        if environ.get(name):
            found.append(Credential(Principal(role), check_token(environ[name], name), name))
    for item in _items(environ.get(ENV_SUBSCRIBER_TOKEN, "")):
        group, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"{ENV_SUBSCRIBER_TOKEN}: expected GROUP=TOKEN[,GROUP=TOKEN...]")
        principal = parse_principal(f"subscriber:{group.strip()}")
        source = f"{ENV_SUBSCRIBER_TOKEN} ({principal})"
        found.append(Credential(principal, check_token(value, source), source))
    return tuple(found)


def _items(text: str) -> Iterable[str]:
    return (item for item in text.split(",") if item.strip())
