"""The physical-limit echo server: ``python -m bench.loadgen.ceiling --port 0``.

A C epoll loop (``bench.loadgen._engine.echo_server``, one thread, no Python per
byte) echoing every byte back: the fastest any backend could serve on this machine,
so ``bench perf`` can quote each backend as a fraction of it. Like ``bench serve``
it prints ``READY HOST:PORT`` first and exits 0 on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys

from bench.loadgen.engine import why_unavailable
from servers import runtime

EXIT_UNAVAILABLE = 1
EXIT_USAGE = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen.ceiling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one (default)")
    parser.add_argument("--seconds", type=float, default=0.0, help="stop after this long (default: never)")
    args = parser.parse_args(argv)
    reason = why_unavailable()
    if reason.startswith("the native engine is not built"):
        print(f"ceiling: {reason}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    from bench.loadgen import _engine

    runtime.raise_open_files_limit()
    runtime.warn_if_public(args.host)
    try:
        listener = runtime.bind_listener(args.host, args.port, backlog=4096)
    except runtime.StartupError as exc:
        print(f"ceiling: {exc}", file=sys.stderr)
        return EXIT_USAGE
    listener.setblocking(False)
    runtime.raise_stop_on_signals()
    try:
        runtime.announce_ready(listener)
        _engine.echo_server(listener.fileno(), args.seconds)
    except runtime.Stop:
        pass
    finally:
        listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
