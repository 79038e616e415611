"""Pick the best training configuration that fits a memory budget: pure functions of the shape and the budget.

Preference order: full fine-tuning, then LoRA, then QLoRA (4-bit). Within a method: the requested micro-batch
(effective batch kept by gradient accumulation), gradient checkpointing off, plain AdamW; then smaller micro-batches,
then checkpointing, then 8-bit AdamW (CUDA). The first setting whose estimate leaves `margin` of the budget free
wins; for each method that did not fit, the smallest setting tried says by how much.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from weitiao.memory.estimate import TrainSettings, distributed_estimate, training_estimate
from weitiao.memory.shape import ModelShape

METHOD_ORDER = ("full", "lora", "qlora")
STRATEGY_ORDER = ("ddp", "zero2", "fsdp")
# what a plan proposes on several devices: FSDP, which the tests run on CPU processes. DeepSpeed ZeRO is configured
# (distributed.strategy deepspeed) but has never run in this project (it needs CUDA), so it is shown among the
# options with its memory and traffic, and not proposed
PLANNED_SHARDED = ("fsdp",)
UNTESTED = {"zero2"}
NOT_TRAINABLE = {("qlora", "fsdp")}  # weitiao does not run QLoRA under FSDP (config.STRATEGY_METHODS)
# how `weitiao plan --write-config` sets each strategy in the config's distributed section
STRATEGY_CONFIG = {"ddp": ["distributed.strategy=ddp"], "fsdp": ["distributed.strategy=fsdp"],
                   "zero2": ["distributed.strategy=deepspeed", "distributed.zero_stage=2"]}


@dataclass
class Plan:
    settings: TrainSettings | None
    grad_accum: int = 1
    strategy: str = "ddp"
    estimate: int = 0  # bytes per device
    budget: int = 0
    rejected: list[str] = field(default_factory=list)  # why each better method did not fit
    devices: int = 1  # the fewest devices the plan fits on
    options: list[dict] = field(default_factory=list)  # each way to spread it over the devices asked for

    @property
    def margin(self) -> float:
        return 1 - self.estimate / self.budget if self.budget else 0.0


def per_device(shape: ModelShape, s: TrainSettings, gpus: int, strategy: str) -> int:
    parts = training_estimate(shape, s)
    return parts["total"] if gpus == 1 else distributed_estimate(parts, s, gpus, strategy)


def device_counts(gpus: int) -> list[int]:
    """1, 2, 4, ... up to `gpus`, and `gpus` itself: the device counts tried, fewest first."""
    counts, n = [], 1
    while n < gpus:
        counts.append(n)
        n *= 2
    return counts + [gpus]


def candidates(base: TrainSettings, method: str):
    micro = base.batch
    batches = []
    while micro >= 1:
        batches.append(micro)
        micro //= 2
    optimizers = ["adamw", "adamw_8bit"] if base.device == "cuda" and method == "full" else ["adamw"]
    for optimizer in optimizers:
        for gc in (False, True):
            for b in batches:
                yield replace(base, method=method, batch=b, gradient_checkpointing=gc, optimizer=optimizer)


def plan(shape: ModelShape, budget: int, base: TrainSettings, gpus: int = 1, margin: float = 0.1,
         methods=METHOD_ORDER) -> Plan:
    """The first (best) setting that fits `budget` bytes per device with `margin` to spare: the best method, on
    the fewest devices, at the largest micro-batch. One device first, since it exchanges nothing between devices
    at each step; more only through a strategy that shards what one device cannot hold (DDP copies everything to
    every device, so it never fits where one device does not). The plan's `options` give each strategy's memory
    and traffic on all `gpus`, to trade memory for speed knowingly."""
    rejected = []
    for method in methods:
        smallest = None
        for devices in device_counts(gpus):
            for strategy in (("ddp",) if devices == 1 else PLANNED_SHARDED):
                if devices > 1 and (method, strategy) in NOT_TRAINABLE:
                    continue
                for s in candidates(base, method):
                    need = per_device(shape, s, devices, strategy)
                    if smallest is None or need < smallest[0]:
                        smallest = (need, s, strategy, devices)
                    if need <= budget * (1 - margin):
                        return Plan(s, grad_accum=max(1, base.batch // s.batch), strategy=strategy, estimate=need,
                                    budget=budget, rejected=rejected, devices=devices,
                                    options=sharding_options(shape, s, gpus, budget * (1 - margin)))
        rejected.append(not_fitting(method, smallest, gpus, budget * (1 - margin)))
    return Plan(None, budget=budget, rejected=rejected)


def not_fitting(method: str, smallest: tuple, gpus: int, usable: float) -> str:
    need, s, strategy, devices = smallest
    return (f"{method}: needs at least {need / 2**30:.2f} GiB per device even at micro-batch {s.batch}"
            f"{', gradient checkpointing' if s.gradient_checkpointing else ''}"
            f"{', 8-bit AdamW' if s.optimizer == 'adamw_8bit' else ''}"
            f"{f', {strategy} on {devices} devices' if gpus > 1 else ''}; {usable / 2**30:.2f} GiB usable")


def sharding_options(shape: ModelShape, s: TrainSettings, gpus: int, usable: float) -> list[dict]:
    """Each strategy on `gpus` devices at the plan's settings: bytes per device, whether it fits, and the bytes a
    device sends per optimizer step (grad_accum 1). Ring collectives move (n-1)/n of a buffer per device; DDP
    all-reduces the gradients (2 x their bytes), ZeRO-2 reduce-scatters them and all-gathers the updated trainable
    weights (also about 2x), FSDP / ZeRO-3 also all-gathers every weight, frozen ones included, for the forward and
    again for the backward (Rajbhandari et al. 2020, ZeRO, arXiv:1910.02054: 2x, 2x and 3x the parameter bytes for
    full fine-tuning; with an adapter the frozen base dominates FSDP's traffic)."""
    if gpus < 2:
        return []
    parts = training_estimate(shape, s)
    ring = (gpus - 1) / gpus
    trainable_bytes = parts["gradients"]
    all_weights = parts["weights"] + parts["trainable_weights"]
    traffic = {"ddp": 2 * trainable_bytes, "zero2": 2 * trainable_bytes,
               "fsdp": 2 * all_weights + trainable_bytes}
    options = []
    for strategy in STRATEGY_ORDER:
        if (s.method, strategy) in NOT_TRAINABLE:
            continue
        need = distributed_estimate(parts, s, gpus, strategy)
        options.append({"strategy": strategy, "devices": gpus, "per_device": need, "fits": need <= usable,
                        "sent_per_step": int(ring * traffic[strategy]), "tested": strategy not in UNTESTED})
    return options


def parse_size(text: str) -> int:
    """'24GiB', '24 GB', '512MiB', '80g' -> bytes (GB and GiB both read as 2^30: GPUs are sold in GiB)."""
    import re

    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?)(i?B?)\s*", text, flags=re.I)
    if not m:
        raise ValueError(f"cannot read a memory size from {text!r} (e.g. 24GiB, 80GB, 512MiB)")
    scale = {"": 2**30, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[m.group(2).upper()]
    return int(float(m.group(1)) * scale)
