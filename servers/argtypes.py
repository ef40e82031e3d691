"""argparse building blocks shared by every ``bench`` subcommand: a parser whose usage
errors are one line, and value types that name what is wrong with a bad value."""

from __future__ import annotations

import argparse
from typing import NoReturn

EXIT_USAGE = 2


class UsageParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (exit 2), not the
    usage block followed by the error."""

    def error(self, message: str) -> "NoReturn":  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        """As argparse's, except that a subcommand's parser refuses arguments it does
        not know itself, so the error names the subcommand (``bench serve: error:
        unrecognized arguments: --bogus``), not the top-level program."""
        namespace, extras = super().parse_known_args(args, namespace)
        if extras and self.is_subcommand:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras

    # Set on the parsers of subcommands (see bench/cli.py's add_subparsers).
    is_subcommand = False


class SubcommandParser(UsageParser):
    """The parser of one ``bench`` subcommand (see :meth:`UsageParser.parse_known_args`)."""

    is_subcommand = True


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0-65535 (0 picks a free one)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def seconds(text: str) -> float:
    """argparse type: seconds >= 0 (0 turns a timeout off)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 (off) or a positive number of seconds, got {text}")
    return value


def comma_items(text: str) -> list[str]:
    """argparse helper: a comma-separated list, blanks and duplicates dropped (first kept).

    Raises:
        argparse.ArgumentTypeError: the list is empty.
    """
    items = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    if not items:
        raise argparse.ArgumentTypeError("needs at least one value")
    return items


def _names_from(text: str, known: list[str]) -> tuple[str, ...]:
    items = comma_items(text)
    unknown = [b for b in items if b not in known]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown backend {unknown[0]!r} (choose from {', '.join(known)})")
    return tuple(items)


def backend_list(text: str) -> tuple[str, ...]:
    """argparse type: comma-separated backend names (the one list syntax of every command)."""
    from servers.backends import BACKENDS

    return _names_from(text, list(BACKENDS))


def backend_list_with_variants(text: str) -> tuple[str, ...]:
    """argparse type: like :func:`backend_list`, also accepting variants such as
    ``asyncio+uvloop`` (see :data:`servers.backends.VARIANTS`)."""
    from servers.backends import BACKENDS, VARIANTS

    return _names_from(text, [*BACKENDS, *VARIANTS])
