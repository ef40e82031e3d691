"""The registry of backends: name -> module, imported only when chosen."""

from __future__ import annotations

import importlib
from types import ModuleType

# name -> (module, one-line description). Modules are named *_server so none shadows
# the stdlib or gevent (select, threading, gevent, asyncio).
BACKENDS: dict[str, tuple[str, str]] = {
    "blocking": ("servers.blocking_server", "one connection at a time; others wait in the backlog"),
    "threading": ("servers.threading_server", "a thread per connection"),
    "select": ("servers.select_server", "one thread, a readiness loop over non-blocking sockets"),
    "gevent": ("servers.gevent_server", "a greenlet per connection on gevent's hub (flagship)"),
    "asyncio": ("servers.asyncio_server", "the stdlib event loop (or uvloop), Protocol callbacks"),
    # Not one of the five models: the gevent hub without a greenlet per connection, for
    # comparison with uvloop (issue 7). See the module docstring.
    "gevent-callback": ("servers.gevent_callback_server",
                        "gevent's hub calling io-watcher callbacks, no greenlet per connection"),
}


# Variants of a backend that the test suite and `bench reliability` run as backends of
# their own: name -> the `bench serve` arguments that select it.
VARIANTS: dict[str, tuple[str, ...]] = {
    "asyncio+uvloop": ("asyncio", "--loop", "uvloop"),
}


def serve_args(name: str) -> list[str]:
    """The ``bench serve`` arguments for a backend or a variant name
    (``"asyncio+uvloop"`` -> ``["asyncio", "--loop", "uvloop"]``)."""
    return list(VARIANTS.get(name, (name,)))


def load(name: str) -> ModuleType:
    """Import and return the backend module called ``name``.

    Raises:
        KeyError: no backend has that name.
    """
    module_name, _ = BACKENDS[name]
    return importlib.import_module(module_name)
