"""Describing the machine and the code a measurement ran on: CPU model, core count,
memory, OS, Python, package versions, open-files limit, git commit. One place for
``bench compare`` (results.json's ``environment``) and ``bench perf`` (its ``machine``
line)."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

# The checkout (bench/ and servers/ live here): where `git rev-parse` asks for the commit.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
# The packages whose versions a results file records.
PACKAGES = ("gevent", "locust", "matplotlib", "psutil", "hdrhistogram", "rich", "greenlet", "uvloop")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit(short: bool = False) -> str | None:
    """The checkout's HEAD commit, or None outside a git checkout (or without git)."""
    argv = ["git", "rev-parse", *(["--short"] if short else []), "HEAD"]
    try:
        out = subprocess.run(argv, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def versions() -> dict[str, str]:
    """Installed versions of :data:`PACKAGES` (those not installed are left out)."""
    found = {}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


def environment() -> dict[str, Any]:
    """The machine and software a run was measured on: results.json's ``environment``."""
    import psutil

    return {
        "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "ram_bytes": psutil.virtual_memory().total,
        "os": platform.platform(), "python": platform.python_version(), "versions": versions(),
        "open_files_limit": list(resource.getrlimit(resource.RLIMIT_NOFILE)), "git_commit": git_commit(),
    }


def one_line() -> str:
    """``CPU model, N CPUs, Linux release, Python x.y.z, commit abc1234``."""
    return (f"{cpu_model()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
            f"Python {platform.python_version()}, commit {git_commit(short=True) or '?'}")
