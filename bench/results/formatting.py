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


def fmt_rate(rate: float | None) -> str:
    """A rate rounded for sentences: ``9,700``, ``12k``, ``1.2M``."""
    if rate is None:
        return "–"
    if rate >= 1e6:
        return f"{rate / 1e6:.1f}M"
    if rate >= 10_000:
        return f"{rate / 1000:.0f}k"
    return fmt_rps(rate)


def join_names(names: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def fmt_cost(us: float | None) -> str:
    """CPU µs per request: ``0.84 µs``, ``3.1 µs``, ``46 µs``, then as :func:`fmt_us`."""
    if us is None:
        return "–"
    if us < 1:
        return f"{us:.2f} µs"
    if us < 10:
        return f"{us:.1f} µs"
    return fmt_us(us)
