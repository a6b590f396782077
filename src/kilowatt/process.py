"""Limits of the operating system process: open files (one per connected charge point)."""

from __future__ import annotations

import contextlib

__all__ = ["open_file_limit", "raise_open_file_limit"]


def raise_open_file_limit(wanted: int | None = None) -> int | None:
    """Raise the soft limit on open files to ``wanted`` (default: the hard limit).

    Every connected charge point holds a socket, and many systems start processes
    with a soft limit of 1,024 although the hard limit allows far more. The limit
    is only ever raised, never lowered. Returns the soft limit now in force, or
    None when there is none (unlimited, or not a POSIX system).
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not a POSIX system
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    target = hard if wanted is None else wanted
    if hard != resource.RLIM_INFINITY:
        target = min(target, hard)
    if target > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def open_file_limit() -> int | None:
    """The soft limit on open files in force; None when there is none."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not a POSIX system
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft
