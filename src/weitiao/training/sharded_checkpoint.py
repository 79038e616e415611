"""Checkpoints that can be resumed for a model FSDP-sharded at load time.

transformers' Trainer saves such a model's weights (gathered into one file) but refuses to checkpoint its optimizer
(it raises unless `save_only_model`), and cannot load the gathered weights back into the sharded model. Without
the optimizer's moments a resume is not the same run. So, next to what the Trainer writes, each checkpoint gets:

- `sharded_state/`: the trainable weights and their AdamW state, each process writing its own shard, through
  `torch.distributed.checkpoint` (DCP), which can load them back even on a different number of processes;
- `scheduler.pt` and `rng_state_<rank>.pth`, as the Trainer writes them when it checkpoints the optimizer.

They are written before `trainer_state.json`, the file that marks a checkpoint complete (training.checkpoints).
"""
from __future__ import annotations

import os

import torch
from transformers import Trainer

SHARDED_STATE = "sharded_state"
SCHEDULER = "scheduler.pt"


def has_sharded_state(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, SHARDED_STATE, ".metadata"))


class ShardedCheckpointTrainer(Trainer):
    """transformers' Trainer whose checkpoints also hold the sharded optimizer state (see the module docstring)."""

    def _save_checkpoint(self, model, trial) -> None:
        folder = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
        save_state(self.model, self.optimizer, folder)
        if self.args.should_save:
            torch.save(self.lr_scheduler.state_dict(), os.path.join(folder, SCHEDULER))
        self._save_rng_state(folder)  # one file per rank
        super()._save_checkpoint(model, trial)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        if not has_sharded_state(resume_from_checkpoint):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        load_state(self.model, None, resume_from_checkpoint)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        if checkpoint is None or not has_sharded_state(checkpoint):
            return super()._load_optimizer_and_scheduler(checkpoint)
        load_state(self.model, self.optimizer, checkpoint)
        self.lr_scheduler.load_state_dict(torch.load(os.path.join(checkpoint, SCHEDULER), weights_only=True))

    def _load_best_model(self) -> None:
        best = self.state.best_model_checkpoint
        if best is None or not has_sharded_state(best):
            return super()._load_best_model()
        load_state(self.model, None, best)


def _options(strict: bool = True):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # frozen weights (a LoRA run's base model) never change: they are not written into every checkpoint, and
    # loading leaves them as they are (strict=False: they are "missing"). A missing trainable tensor still fails,
    # in dcp.load, which fills every tensor of the destination from the checkpoint.
    return StateDictOptions(ignore_frozen_params=True, strict=strict)


def save_state(model, optimizer, folder: str) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer, options=_options())
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=os.path.join(folder, SHARDED_STATE))


def load_state(model, optimizer, folder: str) -> None:
    """Load the trainable weights (and, given an optimizer, its state) in place. DCP loads into the tensors it is
    given, so the current state dicts, shaped like the saved ones, are the destination."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict, get_state_dict, set_model_state_dict, set_state_dict,
    )

    where = os.path.join(folder, SHARDED_STATE)
    if optimizer is None:
        state = {"model": get_model_state_dict(model, options=_options())}
        dcp.load(state, checkpoint_id=where)
        set_model_state_dict(model, state["model"], options=_options(strict=False))
        return
    model_state, optim_state = get_state_dict(model, optimizer, options=_options())
    state = {"model": model_state, "optimizer": optim_state}
    dcp.load(state, checkpoint_id=where)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                   options=_options(strict=False))
