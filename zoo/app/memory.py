"""Memory: the process-wide allocator setting shared by the trainer and the landscape metrics, and the
memory available to refuse a request that cannot fit before allocating it."""

from __future__ import annotations

import ctypes
import ctypes.util
import os


def retain_freed_memory(limit_bytes: int = 1 << 30) -> bool:
    """Ask glibc's malloc to reuse freed large blocks instead of unmapping them (process-wide setting).

    Batched Hessian-vector products allocate and free the same large buffers on every call; by default
    glibc returns each to the OS and the next call page-faults it back, which doubled the time of CNN
    HVPs here. Returns False where there is no glibc (the setting is an optimization only).
    """
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
        ok = libc.mallopt(m_mmap_threshold, int(limit_bytes)) == 1
        ok &= libc.mallopt(m_trim_threshold, int(limit_bytes)) == 1
        ok &= libc.mallopt(m_top_pad, 256 << 20) == 1
        return bool(ok)
    except (OSError, AttributeError):
        return False


def available_memory() -> int | None:
    """Bytes the OS could give this process now: /proc/meminfo's MemAvailable (Linux), else the free physical
    pages from ``os.sysconf``; None where neither is known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the kernel writes kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None
