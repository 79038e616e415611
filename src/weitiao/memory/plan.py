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

    @property
    def margin(self) -> float:
        return 1 - self.estimate / self.budget if self.budget else 0.0


def per_device(shape: ModelShape, s: TrainSettings, gpus: int, strategy: str) -> int:
    parts = training_estimate(shape, s)
    return parts["total"] if gpus == 1 else distributed_estimate(parts, s, gpus, strategy)


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
    """The first (best) setting that fits `budget` bytes per device with `margin` to spare."""
    rejected = []
    strategies = STRATEGY_ORDER if gpus > 1 else ("ddp",)
    for method in methods:
        smallest = None
        for strategy in strategies:
            if (method, strategy) in NOT_TRAINABLE:
                continue
            for s in candidates(base, method):
                need = per_device(shape, s, gpus, strategy)
                if smallest is None or need < smallest[0]:
                    smallest = (need, s, strategy)
                if need <= budget * (1 - margin):
                    return Plan(s, grad_accum=max(1, base.batch // s.batch), strategy=strategy, estimate=need,
                                budget=budget, rejected=rejected)
        need, s, strategy = smallest
        rejected.append(f"{method}: needs at least {need / 2**30:.2f} GiB per device even at micro-batch {s.batch}"
                        f"{', gradient checkpointing' if s.gradient_checkpointing else ''}"
                        f"{', 8-bit AdamW' if s.optimizer == 'adamw_8bit' else ''}"
                        f"{f', {strategy}' if gpus > 1 else ''}; "
                        f"{budget * (1 - margin) / 2**30:.2f} GiB usable")
    return Plan(None, budget=budget, rejected=rejected)


def parse_size(text: str) -> int:
    """'24GiB', '24 GB', '512MiB', '80g' -> bytes (GB and GiB both read as 2^30: GPUs are sold in GiB)."""
    import re

    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?)(i?B?)\s*", text, flags=re.I)
    if not m:
        raise ValueError(f"cannot read a memory size from {text!r} (e.g. 24GiB, 80GB, 512MiB)")
    scale = {"": 2**30, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[m.group(2).upper()]
    return int(float(m.group(1)) * scale)
