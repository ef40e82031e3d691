"""Numbers for humans, shared by the report's sentences, tables and charts. Pure."""

from __future__ import annotations


def fmt_us(us: float | None) -> str:
    """Microseconds for humans: ``42 µs``, ``3.1 ms``, ``41 ms``, ``1.2 s``."""
    if us is None:
        return "–"
    if us < 1000:
        return f"{us:.0f} µs"
    if us < 10_000:
        return f"{us / 1000:.1f} ms"
    if us < 1_000_000:
        return f"{us / 1000:.0f} ms"
    return f"{us / 1_000_000:.1f} s"


def fmt_rps(rps: float | None) -> str:
    """``12,345``; one decimal below 10 (broadcast at low load)."""
    if rps is None:
        return "–"
    return f"{rps:,.1f}" if rps < 10 else f"{rps:,.0f}"


def fmt_bytes(n: float | None) -> str:
    """``512 B``, ``12.3 KiB``, ``41.0 MiB``."""
    if n is None:
        return "–"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def fmt_ratio(ratio: float | None) -> str:
    """``2.1x``; two decimals near 1 so that 1.04x does not read as 1.0x."""
    if ratio is None:
        return "–"
    return f"{ratio:.2f}x" if ratio < 1.095 else f"{ratio:.1f}x"


def connections(users: int) -> str:
    return f"{users} connection" + ("" if users == 1 else "s")
