"""How much memory this process can still take: free GPU memory, or the kernel's MemAvailable on a CPU."""
from __future__ import annotations


def available_bytes(device: str) -> int | None:
    if device == "cuda":
        import torch

        return int(torch.cuda.mem_get_info()[0])
    try:
        for line in open("/proc/meminfo", encoding="ascii"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
