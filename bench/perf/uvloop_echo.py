"""A bare uvloop ``Protocol`` echo server: the fastest Python callback server, as a reference.

Not a backend and not the wire contract: like ``bench.loadgen.ceiling`` it echoes
bytes as they arrive (the same as echoing lines for whole-line clients), with no line
framing, limits or logging. It is what "uvloop's Protocol server" means in ``bench perf``:
the fastest a Python callback server gets here.

usage: python -m bench.perf.uvloop_echo    (binds 127.0.0.1 on a free port, prints READY HOST:PORT)
"""

from __future__ import annotations

import asyncio
import socket


class Echo(asyncio.Protocol):
    def connection_made(self, transport) -> None:  # uvloop's transports are not asyncio.Transport
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def main() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0, backlog=4096)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"READY {host}:{port}", flush=True)
    await asyncio.Event().wait()  # until SIGTERM ends the process


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
