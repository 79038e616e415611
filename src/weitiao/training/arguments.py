"""transformers' TrainingArguments from the config's train section, shared by every training workflow."""
from __future__ import annotations

import math
from pathlib import Path

from weitiao.config import Config


def build_training_args(cfg: Config, out_dir: Path, device: str, amp, has_val: bool, n_train: int | None,
                        args_class=None, **extra):
    """transformers' TrainingArguments from the train section: validation, checkpoints, best-model tracking.

    `args_class` is a subclass such as TRL's DPOConfig, whose own settings come in `extra`; every field set here is
    set explicitly, so a subclass's different defaults (TRL turns checkpointing and bf16 on) do not apply."""
    import torch
    from transformers import TrainingArguments

    t = cfg.train
    strategy = "steps" if t.eval_steps > 0 else "epoch"
    kwargs = dict(
        output_dir=str(out_dir / "checkpoints"),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps if t.max_steps > 0 else -1,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=math.ceil(t.warmup_ratio * planned_steps(cfg, n_train)),
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim=optimizer(t.optim, device),
        bf16=amp is torch.bfloat16,
        fp16=amp is torch.float16,
        **checkpointing_args(t.gradient_checkpointing),
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        seed=t.seed,
        data_seed=t.seed,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        eval_strategy=strategy if has_val else "no",
        eval_steps=t.eval_steps if t.eval_steps > 0 else None,
        save_strategy=strategy,
        save_steps=t.eval_steps if t.eval_steps > 0 else None,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=has_val and t.load_best_at_end,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        use_cpu=device == "cpu",
        report_to=[name for name in t.report_to if name != "none"] or "none",
        remove_unused_columns=False,
        prediction_loss_only=True,  # validation needs the loss only; keeping logits costs B x T x vocab floats
        dataloader_num_workers=0,
        disable_tqdm=False,
        # a stream (n_train None): each process reads its own share of batches. accelerate's default for an
        # iterable set, one process reading and slicing every batch along dim 0, would cut a padding-free batch's
        # 1-D boundaries (cu_seq_lens) to the row count
        **({"accelerator_config": {"dispatch_batches": False}} if n_train is None else {}),
    )
    return (args_class or TrainingArguments)(**{**kwargs, **extra})


def optimizer(name: str, device: str) -> str:
    """train.optim, with `auto` resolved: the fused AdamW kernel on a CUDA GPU (one launch for all tensors, no
    per-tensor loop on the host), PyTorch's default AdamW elsewhere."""
    if name != "auto":
        return name
    return "adamw_torch_fused" if device == "cuda" else "adamw_torch"


def checkpointing_args(enabled: bool) -> dict:
    """Activation (gradient) checkpointing under the name this transformers version uses."""
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    name = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    # non-reentrant checkpointing works with frozen inputs (LoRA) and is the one PyTorch recommends
    return {name: enabled, f"{name}_kwargs": {"use_reentrant": False} if enabled else None}


def planned_steps(cfg: Config, n_train: int | None) -> int:
    """The optimizer steps a run will take (n_train None: a stream, which sets train.max_steps)."""
    t = cfg.train
    if t.max_steps > 0:
        return t.max_steps
    per_epoch = math.ceil(n_train / (t.batch_size * t.grad_accum))
    return max(1, math.ceil(per_epoch * t.epochs))
