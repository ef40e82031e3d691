"""What a server is told to do: the parsed, validated command line of ``bench serve``."""

from __future__ import annotations

from dataclasses import dataclass, field

from servers.protocol import Limits, Mode


@dataclass(frozen=True)
class ServerConfig:
    """Everything a backend needs besides its listening socket.

    Attributes:
        backend: the backend's name (see :data:`servers.backends.BACKENDS`).
        mode: echo or broadcast.
        host, port: where to listen; port 0 picks a free port.
        limits: the protocol limits.
        quiet: do not log connects and disconnects.
        selector: the select backend's readiness API: ``select``, ``poll``, ``epoll``
            or ``default`` (the platform's best).
        loop: the asyncio backend's event loop: ``asyncio`` or ``uvloop``.
    """

    backend: str
    mode: Mode = Mode.ECHO
    host: str = "127.0.0.1"
    port: int = 5000
    limits: Limits = field(default_factory=Limits)
    quiet: bool = False
    selector: str = "default"
    loop: str = "asyncio"
