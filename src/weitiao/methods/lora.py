"""LoRA (Hu et al. 2021, arXiv:2106.09685) through peft, with the DoRA and rsLoRA switches.

For a frozen weight W (d_out x d_in) LoRA learns B (d_out x r) and A (r x d_in) and computes
W x + (alpha / r) * B A x; B starts at zero, so training starts from the base model exactly.
"""
from __future__ import annotations

from weitiao.config import MethodConfig


def apply(model, cfg: MethodConfig):
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
