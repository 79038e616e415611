"""Liger Kernel on a CUDA GPU (`train.kernels`): which kernels a run trains with, decided once, before the Trainer.

Liger Kernel (Hsu et al. 2024, arXiv:2410.10989; `pip install weitiao[gpu]`) replaces a covered model's RMSNorm,
SwiGLU MLP and rotary embedding with Triton kernels, and its LM head plus cross-entropy with one fused, chunked
pass that never holds the B x T x vocabulary logits. transformers applies it to the loaded model when
TrainingArguments.use_liger_kernel is set (transformers.integrations.liger); weitiao only decides whether to ask,
so nothing here patches a library class. Where Liger does not run (a CPU, Apple silicon, a model family it does not
cover, or the package missing) weitiao's own fused head-and-loss pass (training.fused_loss) is the loss path, as
before. metrics.json records which path ran (`train.kernels`, `train.logits`).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from weitiao.errors import WeitiaoError


@dataclass(frozen=True)
class KernelPlan:
    liger: bool
    why: str  # one line: what runs, and why not Liger when it does not

    def training_args(self) -> dict:
        """TrainingArguments' fields for this plan: Liger's kernels and its fused linear cross-entropy."""
        if not self.liger:
            return {}
        return {"use_liger_kernel": True, "liger_kernel_config": {
            "rope": True, "rms_norm": True, "swiglu": True, "cross_entropy": False,
            "fused_linear_cross_entropy": True}}


def liger_covers(model_type: str) -> bool:
    """Whether Liger has kernels for this transformers model type; False where liger-kernel cannot be imported
    (no Triton, as on a CPU-only machine)."""
    try:
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    except Exception:  # noqa: BLE001 - ImportError, or Triton failing to find a GPU when imported
        return False
    return model_type in MODEL_TYPE_TO_APPLY_LIGER_FN


def plan(choice: str, device: str, model_type: str, virtual_tokens: bool, installed: bool | None = None,
         covered: bool | None = None) -> KernelPlan:
    """train.kernels for this run: `auto` takes Liger where it runs, `liger` requires it, `none` never. `installed`
    and `covered` default to what this machine has (liger-kernel importable; Liger's list of model types)."""
    if choice == "none":
        return KernelPlan(False, "train.kernels: none")
    installed = importlib.util.find_spec("liger_kernel") is not None if installed is None else installed
    reasons = [why for bad, why in (
        (device != "cuda", f"Liger's kernels run on CUDA GPUs, and this run is on {device}"),
        (not installed, "liger-kernel is not installed (pip install 'weitiao[gpu]')"),
        (virtual_tokens, "the method puts virtual tokens in front of each row, which Liger's loss does not see"),
    ) if bad]
    if not reasons and not (liger_covers(model_type) if covered is None else covered):
        reasons.append(f"Liger has no kernels for model type {model_type!r}")
    if reasons and choice == "liger":
        raise WeitiaoError("train.kernels: liger cannot run: " + "; ".join(reasons))
    if reasons:
        return KernelPlan(False, "kernels: transformers' own (" + "; ".join(reasons) + ")")
    return KernelPlan(True, "kernels: Liger's RMSNorm, SwiGLU, RoPE and fused linear cross-entropy (train.kernels)")
