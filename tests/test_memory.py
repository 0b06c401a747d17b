"""engines/memory.py: the studio's allocator settings give freed memory back (glibc, as on the studio's Linux)."""
from __future__ import annotations

import ctypes
import os
import threading

from engines.loadtest import rss_mb
from engines.memory import _libc, limit_malloc_arenas, release_freed_memory


def test_freed_memory_goes_back_to_the_system_after_a_request():
    libc = _libc()
    assert libc is not None, "the studio runs on glibc here; without it both calls are no-ops"
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    result = {}

    def request():   # in a thread of its own, as the Gradio queue's workers run requests
        blocks = [libc.malloc(64 * 1024) for _ in range(1600)]          # 100 MB below the mmap threshold ...
        for block in blocks:
            ctypes.memset(block, 1, 64 * 1024)                          # ... made resident
        # keeps the heap's top where it is: the blocks took every free chunk of their size, so one more comes
        # from the top (a small pin could come from a free chunk below them, and free() would then trim)
        pin = libc.malloc(64 * 1024)
        result["used"] = rss_mb(os.getpid())
        for block in blocks:
            libc.free(block)
        result["freed"] = rss_mb(os.getpid())
        assert release_freed_memory()
        result["trimmed"] = rss_mb(os.getpid())
        libc.free(pin)

    worker = threading.Thread(target=request)
    worker.start()
    worker.join()
    assert result["freed"] > result["used"] - 20          # free() alone keeps the pages
    assert result["trimmed"] < result["freed"] - 80       # malloc_trim gives them back
    assert limit_malloc_arenas(2)
