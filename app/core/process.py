"""Process-wide settings the server applies once at start (never at import)."""
from __future__ import annotations

import ctypes
import ctypes.util
import os

M_ARENA_MAX = -8  # glibc mallopt parameter (malloc.h)
SERVER_MALLOC_ARENAS = 2


def limit_malloc_arenas(n: int = SERVER_MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for threads created from now on: each request thread and torch worker otherwise
    gets its own arena and keeps freed memory in it. bench/serve.py (8 users + a discovery job, 25 s per phase):
    server peak RSS 3,382 MB with glibc's default, 2,631 MB with 2 arenas at the same throughput (4.5 req/s with the
    job), 2,485 MB with 1 arena but 3.8 req/s. An explicit MALLOC_ARENA_MAX in the environment wins. -> whether the
    cap was set (False without glibc)."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(ctypes.c_int(M_ARENA_MAX), ctypes.c_int(n)))
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to cap
        return False
