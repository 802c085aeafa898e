"""Process-wide allocator setting shared by the trainer and the landscape metrics."""

from __future__ import annotations

import ctypes
import ctypes.util


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
