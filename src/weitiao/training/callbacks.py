"""Trainer callbacks that keep a run safe (skip non-finite updates, save a checkpoint on Ctrl-C) and time its
training steps."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from weitiao.training.checkpoints import SEAL


class NonFiniteGuard(TrainerCallback):
    """Skip an optimizer step whose gradients hold NaN or inf; stop after `max_consecutive` such steps in a row.

    The check runs after gradient clipping and before `optimizer.step()`. Setting every gradient to None makes
    the optimizer leave those parameters and their moments untouched, so a skipped step changes no weight.
    """

    def __init__(self, max_consecutive: int, log=print):
        self.max_consecutive = max_consecutive
        self.log = log
        self.skipped = 0
        self.consecutive = 0
        self.stopped_at: int | None = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if all(bool(torch.isfinite(g).all()) for g in grads):
            self.consecutive = 0
            return control
        for p in model.parameters():
            p.grad = None
        self.skipped += 1
        self.consecutive += 1
        step = state.global_step + 1
        self.log(f"step {step}: non-finite gradient, update skipped ({self.consecutive} in a row, "
                 f"{self.skipped} in all)")
        if self.consecutive >= self.max_consecutive:
            self.stopped_at = step
            control.should_training_stop = True
        return control


class SaveOnInterrupt(TrainerCallback):
    """First Ctrl-C: finish the current step, save a checkpoint, stop. Second Ctrl-C: stop at once."""

    def __init__(self, log=print):
        self.log = log
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame):
        if self.requested:
            signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested = True
        self.log("\ninterrupt: saving a checkpoint after this step (press Ctrl-C again to stop at once)")

    def on_train_begin(self, args, state, control, **kwargs):
        self._previous = signal.signal(signal.SIGINT, self._handler)
        return control

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return control


class StepTimer(TrainerCallback):
    """Wall time spent in training steps: fetching and collating the batches, forward, backward and the optimizer
    step, but not validation, checkpoint saving or logging, which the Trainer runs between steps.

    Throughput over this time does not change with `eval_steps` or the checkpoint size, so runs with different
    settings (and `bench/speed.py`'s three trainers) are compared on the training work alone. The clock restarts
    after each log, evaluation and save, which the Trainer reports after doing them."""

    def __init__(self):
        self.seconds = 0.0
        self.steps = 0
        self.start_epoch = 0.0  # where this process began: after a resume, the checkpoint's epoch
        self._mark: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start_epoch = state.epoch or 0.0
        return self._restart(args, state, control)

    def _restart(self, args, state, control, **kwargs):
        self._mark = time.perf_counter()
        return control

    on_log = on_evaluate = on_save = _restart

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        if self._mark is not None:
            self.seconds += now - self._mark
            self.steps += 1
        self._mark = now
        return control


class SealCheckpoint(TrainerCallback):
    """After every checkpoint: wait until every process has written its part, then (rank 0) write the seal that
    `training.checkpoints` requires of a multi-process checkpoint. transformers' Trainer calls `on_save` on every
    rank right after its own `_save_checkpoint`, so the barrier is met once all of them have returned."""

    def on_save(self, args, state, control, **kwargs):
        import torch.distributed as dist

        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if world > 1:
            dist.barrier()
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            tmp = folder / (SEAL + ".tmp")
            tmp.write_text(json.dumps({"step": state.global_step, "world_size": world}) + "\n")
            os.replace(tmp, folder / SEAL)  # whole or absent, as the checkpoint itself
        return control
