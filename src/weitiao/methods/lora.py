"""LoRA (Hu et al. 2021, arXiv:2106.09685) through peft, with the DoRA and rsLoRA switches.

For a frozen weight W (d_out x d_in) LoRA learns B (d_out x r) and A (r x d_in) and computes
W x + (alpha / r) * B A x; B starts at zero, so training starts from the base model exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from weitiao.methods.protocol import Method, MethodConfig
from weitiao.settings import doc



@dataclass
class LoraSettings:
    r: int = doc("LoRA rank.", 16)
    alpha: int = doc("LoRA alpha; the update is scaled by alpha/r (alpha/sqrt(r) with rsLoRA).", 32)
    dropout: float = doc("Dropout on the LoRA input.", 0.0)
    target_modules: list[str] = doc(
        "Module names to adapt; `[all-linear]` adapts every linear layer except the output head.",
        default_factory=lambda: ["all-linear"],
    )
    use_dora: bool = doc("DoRA: weight-decomposed LoRA (Liu et al. 2024, arXiv:2402.09353).", False)
    use_rslora: bool = doc("rsLoRA: scale by alpha/sqrt(r) (Kalajdzievski 2023, arXiv:2312.03732).", False)

    def problems(self, where: str = "method.lora") -> list[str]:
        p = [] if self.r >= 1 else [f"{where}.r: must be at least 1, got {self.r}"]
        if not 0.0 <= self.dropout < 1.0:
            p.append(f"{where}.dropout: must be in [0, 1), got {self.dropout}")
        return p


def apply(model, cfg: MethodConfig, gradient_checkpointing: bool = False):
    from peft import LoraConfig, TaskType, get_peft_model

    lc = cfg.lora
    targets = lc.target_modules
    # SEQ_CLS also trains the new classification head in full (peft's modules_to_save: `classifier`, `score`)
    task = TaskType.SEQ_CLS if type(model).__name__.endswith("ForSequenceClassification") else TaskType.CAUSAL_LM
    peft_config = LoraConfig(
        task_type=task,
        r=lc.r,
        lora_alpha=lc.alpha,
        lora_dropout=lc.dropout,
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        use_dora=lc.use_dora,
        use_rslora=lc.use_rslora,
    )
    return get_peft_model(model, peft_config)


def autocast_input_casts_skipped(model, cfg: MethodConfig, amp, strategy: str):
    """A context in which peft does not cast each LoRA layer's input to the adapter's dtype, when that cast is a
    round trip: under autocast to `amp`, a bf16 (or fp16) input x of shape (B, T, d_in) is cast to the fp32 adapter
    weight's dtype by peft, then straight back to `amp` by autocast for lora_A's matmul, and autograd keeps both
    casts for the backward. Skipping them leaves the loss and gradients bit-identical (the round trip is exact) and
    saves those copies of every adapted layer's input, forward and backward (bench/step_ab.py, variant `casts`:
    SmolLM2-135M on a 2-core Xeon, see docs/benchmarks/speed.md).

    Active for plain LoRA on a single process or DDP, where accelerate runs every training forward under autocast.
    Not for DoRA (its variant computes on x outside the adapter's matmuls), nor under FSDP or ZeRO, whose own
    mixed-precision policies decide the dtypes, nor without autocast (an fp32 run, where no cast happens anyway).
    QLoRA needs nothing: peft's 4-bit layers skip the cast under autocast themselves."""
    from peft.helpers import disable_input_dtype_casting

    active = amp is not None and cfg.name == "lora" and not cfg.lora.use_dora and strategy in ("single", "ddp")
    return disable_input_dtype_casting(model, active=active)


METHOD = Method("lora", apply, help="trains low-rank adapters (LoRA; DoRA with `use_dora`)",
                section_help="Settings of `lora` (and of the adapters of `qlora`).", saves="adapter", section="lora",
                settings_type=LoraSettings, continues_lora=True, frozen_dense_base=True,
                training_context=autocast_input_casts_skipped)
