"""The train-time memory check: estimate before loading the model, stop with a plan when it will not fit."""
from __future__ import annotations

import dataclasses

from weitiao.config import PAIR_TASKS, POLICY_OPTIMISATION_TASKS, Config
from weitiao.errors import WeitiaoError
from weitiao.memory.available import available_bytes
from weitiao.memory.estimate import METHOD_FAMILY, TrainSettings, distributed_estimate, training_estimate
from weitiao.memory.shape import load_config_dict, model_shape
from weitiao.training import distributed

OPTIMIZERS = {"adamw_bnb_8bit": "adamw_8bit", "adamw_8bit": "adamw_8bit", "paged_adamw_8bit": "adamw_8bit",
              "sgd": "sgd"}


def settings_for(cfg: Config, device: str, seq: int) -> TrainSettings:
    t, m = cfg.train, cfg.method
    from weitiao.methods import method_of
    from weitiao.models.precision import fast_bf16, weights_dtype

    precision = {"fp32": "fp32", "bf16": "bf16", "fp16": "fp16"}.get(t.precision,
                                                                     "bf16" if fast_bf16(device) else "fp32")
    weights = weights_dtype(cfg, device)
    # a DPO or reward step runs chosen and rejected through the model as one batch of 2 x batch_size rows (a reward
    # model's head outputs one score per row, like a classifier's). KTO runs each row and, without gradients, its
    # KL row: counted as 2 trained rows, the estimate was +46% over the measured peak on SmolLM2 (as 1: -16%); the
    # guard keeps the side that cannot let a run through that will not fit
    rows = ROWS_PER_EXAMPLE.get(cfg.task, 1)
    virtual = getattr(method_of(m).settings(m), "num_virtual_tokens", 16)
    return TrainSettings(method=m.name, seq=seq, batch=t.batch_size * rows, precision=precision,
                         weights_dtype=weights,
                         optimizer=OPTIMIZERS.get(t.optim, "adamw"), gradient_checkpointing=t.gradient_checkpointing,
                         lora_r=m.lora.r, lora_targets=tuple(m.lora.target_modules), qlora_bits=m.qlora.bits,
                         double_quant=m.qlora.double_quant,
                         qlora_upcast=m.qlora.upcast_fp32 or m.qlora.compute_dtype == "float16",
                         freeze_layers=m.freeze.last_layers, virtual_tokens=virtual, device=device,
                         task=estimate_task(cfg.task), loss_chunk=t.fused_loss_chunk if fused_loss_planned(cfg) else 0)


def fused_loss_planned(cfg: Config) -> bool:
    """Whether the config asks for the fused head-and-loss pass where it can run (train.fused_loss): SFT without
    virtual tokens, and the head's weight not sharded outside the forward pass (FSDP, ZeRO-3). The loaded model is
    checked too (training.fused_loss.usable), after this estimate."""
    from weitiao.methods import method_of

    strategy = distributed.strategy(cfg)
    sharded = strategy == "fsdp" or (strategy == "deepspeed" and cfg.distributed.zero_stage == 3)
    return (cfg.task == "sft" and cfg.train.fused_loss and not method_of(cfg.method).virtual_tokens
            and not sharded)


ROWS_PER_EXAMPLE = {task: 2 for task in PAIR_TASKS}  # rows through the model per batch_size example


def estimate_task(task: str) -> str:
    """The estimator's model kind: a preference-optimised policy is a causal LM (`sft`), a reward model a
    classifier."""
    return "sft" if task in POLICY_OPTIMISATION_TASKS else {"reward": "classify", "regress": "classify"}.get(task,
                                                                                                             task)


def check(cfg: Config, folder: str, device: str, seq: int, log=print, logit_fraction: float = 1.0) -> dict | None:
    """The estimate's breakdown (recorded in metrics.json); raises when it exceeds the memory available."""
    if cfg.method.name not in METHOD_FAMILY:  # a method registered without a memory model of its own
        log(f"memory: no estimate for method {cfg.method.name} (memory/estimate.py models "
            f"{', '.join(METHOD_FAMILY)}); not checked")
        return None
    try:
        shape = model_shape(load_config_dict(folder), task=estimate_task(cfg.task))
    except Exception as err:  # noqa: BLE001 - an architecture the meta-device count cannot build: no estimate
        log(f"memory: no estimate for this architecture ({type(err).__name__}); not checked")
        return None
    settings = dataclasses.replace(settings_for(cfg, device, seq), logit_fraction=logit_fraction)
    parts = training_estimate(shape, settings)
    need, processes = parts["total"], ""
    world = distributed.world()
    run = distributed.strategy(cfg, world)
    if run != "single":
        # each process holds its share (FSDP/ZeRO shard the states; DDP replicates them); on a CPU the processes of
        # this machine share its memory, while each GPU holds one process
        zero = f"zero{cfg.distributed.zero_stage}"
        per_process = distributed_estimate(parts, settings, world.world_size, {"deepspeed": zero}.get(run, run))
        sharing = 1 if device == "cuda" else world.local_world_size
        need = per_process * sharing
        parts = {**parts, "per_process": per_process, "this_machine": need}
        processes = f" ({per_process / 2**30:.2f} GiB per process under {run}, {sharing} on this {device})"
    free = available_bytes(device)
    log(f"memory: estimated peak {need / 2**30:.2f} GiB for {cfg.method.name}, longest batch "
        f"{settings.batch} x {seq} tokens{processes}" + (f"; {free / 2**30:.2f} GiB available on {device}"
                                                         if free else ""))
    if free is not None and need > free and cfg.train.memory_check:
        from weitiao.memory.plan import plan

        suggestion = plan(shape, free, settings)
        hint = "nothing fits; shorten data.max_length or use a machine with more memory"
        if suggestion.settings is not None:
            s = suggestion.settings
            hint = (f"`weitiao plan` suggests method {s.method}, train.batch_size={s.batch}, "
                    f"train.grad_accum={suggestion.grad_accum}, train.gradient_checkpointing="
                    f"{str(s.gradient_checkpointing).lower()} ({suggestion.estimate / 2**30:.2f} GiB)")
        raise WeitiaoError(f"memory: the run needs about {need / 2**30:.2f} GiB but {device} has "
                           f"{free / 2**30:.2f} GiB available; {hint}. To try anyway: train.memory_check=false")
    return {k: int(v) for k, v in parts.items()}
