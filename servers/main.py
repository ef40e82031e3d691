"""``bench serve BACKEND``: parse the flags, bind, print READY, hand over to a backend.

Every user error (bad flag, unknown backend, busy port) ends here as one line on
stderr and a non-zero exit: 2 for usage errors, 1 for a failure to start.
"""

from __future__ import annotations

import argparse
import sys

from servers import backends, runtime
from servers.argtypes import EXIT_USAGE, SubcommandParser, port_number, positive_int, seconds
from servers.config import ServerConfig
from servers.protocol import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_LINE_TIMEOUT,
    DEFAULT_MAX_CLIENTS,
    DEFAULT_MAX_LINE,
    DEFAULT_MAX_OUTPUT_BUFFER,
    Limits,
    Mode,
)

EXIT_STARTUP = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``bench serve``'s arguments on ``parser``."""
    parser.add_argument("backend", choices=sorted(backends.BACKENDS), metavar="BACKEND",
                        help="concurrency model: " + ", ".join(backends.BACKENDS))
    parser.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.ECHO.value,
                        help="echo: each line back to its sender; broadcast: to every other client")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=5000, help="TCP port; 0 picks a free one")
    parser.add_argument("--max-clients", type=positive_int, default=DEFAULT_MAX_CLIENTS, metavar="N",
                        help=f"connections beyond this get 'ERR server full' (default {DEFAULT_MAX_CLIENTS})")
    parser.add_argument("--max-line", type=positive_int, default=DEFAULT_MAX_LINE, metavar="BYTES",
                        help=f"longest line, newline included (default {DEFAULT_MAX_LINE})")
    parser.add_argument("--max-output-buffer", type=positive_int, default=DEFAULT_MAX_OUTPUT_BUFFER,
                        metavar="BYTES", help="unsent bytes a broadcast receiver may fall behind "
                        f"before it is dropped (default {DEFAULT_MAX_OUTPUT_BUFFER})")
    parser.add_argument("--idle-timeout", type=seconds, default=DEFAULT_IDLE_TIMEOUT, metavar="S",
                        help=f"drop a client silent this long; 0 = off (default {DEFAULT_IDLE_TIMEOUT:g})")
    parser.add_argument("--line-timeout", type=seconds, default=DEFAULT_LINE_TIMEOUT, metavar="S",
                        help="drop a client that leaves a line unfinished this long; 0 = off "
                        f"(default {DEFAULT_LINE_TIMEOUT:g})")
    # Defaults of None, so that giving one to a backend it does not apply to is refused.
    parser.add_argument("--selector", choices=["default", "select", "poll", "epoll"],
                        help="select backend only: the readiness API (default: the platform's best)")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"],
                        help="asyncio backend only: the event loop implementation (default asyncio)")
    parser.add_argument("--quiet", action="store_true", help="do not log connects and disconnects")


# Options that apply to one backend only: option -> (its attribute, that backend).
BACKEND_OPTIONS = {"--selector": ("selector", "select"), "--loop": ("loop", "asyncio")}


def misapplied_option(args: argparse.Namespace) -> str | None:
    """The usage error for an option given to a backend it does not apply to, or None."""
    for option, (attr, owner) in BACKEND_OPTIONS.items():
        if getattr(args, attr, None) is not None and args.backend != owner:
            return f"{option} applies to the {owner} backend only, not {args.backend}"
    return None


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """Build the validated :class:`ServerConfig` from parsed arguments."""
    limits = Limits(
        max_line=args.max_line,
        max_clients=args.max_clients,
        max_output_buffer=args.max_output_buffer,
        idle_timeout=args.idle_timeout,
        line_timeout=args.line_timeout,
    )
    return ServerConfig(
        backend=args.backend,
        mode=Mode(args.mode),
        host=args.host,
        port=args.port,
        limits=limits,
        quiet=args.quiet,
        selector=args.selector or "default",
        loop=args.loop or "asyncio",
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT. Returns the process exit status."""
    misapplied = misapplied_option(args)
    if misapplied is not None:
        print(f"bench serve: error: {misapplied} (see bench serve --help)", file=sys.stderr)
        return EXIT_USAGE
    config = config_from_args(args)
    # Until the backend installs its own handling, a signal unwinds cleanly (exit 0).
    runtime.raise_stop_on_signals()
    log = runtime.EventLog(quiet=config.quiet)
    module = backends.load(config.backend)
    try:
        check = getattr(module, "check_config", None)
        if check is not None:
            check(config)  # e.g. uvloop missing: fail before binding
        runtime.raise_open_files_limit()
        listener = runtime.bind_listener(config.host, config.port)
    except runtime.Stop:
        return 0
    except runtime.StartupError as exc:
        print(f"bench serve: error: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    runtime.warn_if_public(config.host)
    try:
        module.serve(listener, config, log)
    except runtime.Stop:
        pass  # a signal arrived before the backend installed its own handling
    except KeyboardInterrupt:
        pass
    finally:
        runtime.close_quietly(listener)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m servers BACKEND ...``: the same as ``bench serve``."""
    parser = SubcommandParser(prog="bench serve", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))
