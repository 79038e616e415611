"""Memory as measured while a run trains: the process's peak RSS and, on CUDA, the allocator's peaks, for the
training phase alone."""
from __future__ import annotations

from contextlib import contextmanager


def peak_memory(device: str, train_peak: dict | None = None) -> dict:
    """The process's peak memory so far: resident set size (CPU) and, on CUDA, the allocator's peaks; with
    `train_peak` (from `training_peak`), the training phase's own peaks too.

    The whole run's RSS peak is at least the training phase's. The two come from different kernel counters
    (getrusage's ru_maxrss and /proc's VmHWM, read at different times). Read after memory was freed, ru_maxrss
    was seen 184 KiB below the VmHWM read before it."""
    import resource

    import torch

    train_peak = train_peak or {}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    peak = {"peak_rss_bytes": max(rss, train_peak.get("train_peak_rss_bytes", 0))}
    if device == "cuda":
        peak.update(cuda_max_allocated_bytes=torch.cuda.max_memory_allocated(),
                    cuda_max_reserved_bytes=torch.cuda.max_memory_reserved())
    return {**peak, **train_peak}


@contextmanager
def training_peak(device: str):
    """Yields a dict that, once the block ends, holds the block's own peak memory: VmHWM, the kernel's peak RSS
    of this process (`train_peak_rss_bytes`; Linux, where writing 5 to /proc/self/clear_refs resets it) and, on
    CUDA, the allocator's peaks. Without the reset, the peak also holds the base model's test-split generation,
    which runs first and can need more than training."""
    import torch

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    release_freed_memory()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        rss_reset = True
    except OSError:
        rss_reset = False
    peak: dict = {}
    if rss_reset:
        peak["train_start_rss_bytes"] = proc_status_bytes("VmRSS")
    try:
        yield peak
    finally:
        if rss_reset and (hwm := proc_status_bytes("VmHWM")) is not None:
            peak["train_peak_rss_bytes"] = hwm
        if device == "cuda":
            peak.update(train_cuda_max_allocated_bytes=torch.cuda.max_memory_allocated(),
                        train_cuda_max_reserved_bytes=torch.cuda.max_memory_reserved())


def proc_status_bytes(field: str) -> int | None:
    """A size from /proc/self/status (VmRSS, VmHWM; reported in kB), or None where there is none."""
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            value = next((line.split()[1] for line in f if line.startswith(field + ":")), None)
    except OSError:
        return None
    return None if value is None else int(value) * 1024


def release_freed_memory() -> None:
    """Hands memory that earlier phases freed back to the OS (glibc's malloc_trim), so that training starts from
    what is alive. glibc keeps freed heap memory resident: after the base model's generation on the test split,
    the process held that phase's buffers, and the training phase's peak RSS counted them (measured on the
    quickstart: see docs/guides/memory.md). A no-op where the C library is not glibc."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
