"""Dispatch `paynotify <command>` to the module that owns it.

Each command module offers `add_arguments(parser)` and `run(args) -> int`. Every flag can also be
set in the environment as PAYNOTIFY_<FLAG> (dashes as underscores, e.g.
PAYNOTIFY_PUBLISH_TIMEOUT); a repeatable flag takes a comma-separated list there. A flag on the
command line wins.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, Protocol, cast

__all__ = ["COMMANDS", "build_parser", "main"]

ENV_PREFIX = "PAYNOTIFY_"

# name -> (module, one-line help). Modules are imported only when the parser is built.
COMMANDS: dict[str, tuple[str, str]] = {
    "hub": ("paynotify_hub.cli", "run the gRPC notification hub"),
    "bridge": ("paynotify_bridge.cli", "run the HTTP bridge that receives Alipay's notifications"),
    "run": ("paynotify_cli.run", "hub and bridge on a local SQLite store, for a first look"),
    "tail": ("paynotify_client.tail", "subscribe to a group, print notifications as JSON, ack"),
    "send-test": ("paynotify_bridge.simulator", "act as Alipay: sign a sample, POST, retry"),
    "status": ("paynotify_cli.admin_status", "per group: pending, in flight, dead, oldest age"),
    "show": ("paynotify_cli.admin_show", "one notification: receipts, deliveries, attempts"),
    "dead-letters": ("paynotify_cli.admin_dead_letters", "list dead letters and why they died"),
    "replay": ("paynotify_cli.admin_replay", "deliver a dead letter, or a group since then, again"),
}


class CommandModule(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _load(module_name: str) -> CommandModule | None:
    try:
        return cast(CommandModule, importlib.import_module(module_name))
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            return None  # that command's package is not installed here
        raise


class _ReplacingAppend(argparse._AppendAction):
    """A repeatable flag whose command-line values replace its default (from the environment or
    the code) instead of adding to it: a flag on the command line wins."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        if getattr(namespace, self.dest, None) is self.default:
            setattr(namespace, self.dest, [])
        super().__call__(parser, namespace, values, option_string)


def _apply_env_defaults(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help",):
            continue
        if type(action) is argparse._AppendAction:
            action.__class__ = _ReplacingAppend
        long = max(action.option_strings, key=len)
        env_name = ENV_PREFIX + long.lstrip("-").replace("-", "_").upper()
        raw = os.environ.get(env_name)
        if raw is None:
            continue
        if isinstance(action, argparse._AppendAction):
            values = [action.type(v) if action.type else v for v in raw.split(",") if v]  # type: ignore[operator]
            parser.set_defaults(**{action.dest: values})
        elif isinstance(action, argparse._StoreTrueAction):
            parser.set_defaults(**{action.dest: raw.lower() in ("1", "true", "yes", "on")})
        else:
            parser.set_defaults(**{action.dest: action.type(raw) if action.type else raw})  # type: ignore[operator]
        action.required = False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paynotify",
        description="Alipay payment notifications, acknowledged by your services. "
        "Every flag can also be set as PAYNOTIFY_<FLAG> in the environment.",
    )
    parser.add_argument(
        "--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = _load(module_name)
        if module is None:
            continue
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(cmd)
        _apply_env_defaults(cmd)
        cmd.set_defaults(_module=module)
    _apply_env_defaults(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    module: CommandModule = args._module
    return module.run(args)


if __name__ == "__main__":
    sys.exit(main())
