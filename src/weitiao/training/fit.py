"""The one training loop every workflow runs: a transformers (or TRL) Trainer, with the guards a run needs.

Every workflow builds its own Trainer (its batches, its loss, its TRL class) and hands it here. What no workflow
should get wrong on its own lives here, once:
- resume from the newest complete checkpoint (`training.checkpoints.last_complete`);
- early stopping on the validation loss (train.early_stopping_patience);
- a non-finite gradient skips its update, and too many in a row stop the run, naming the last good checkpoint;
- the first Ctrl-C saves a checkpoint and stops, and the same command resumes;
- a full disk ends in one message naming the last complete checkpoint, not a traceback;
- the training phase's own peak memory, and the time spent in training steps alone.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from weitiao.console import log
from weitiao.errors import DataError, Interrupted, WeitiaoError, disk_full_error
from weitiao.memory.measured import peak_memory, training_peak
from weitiao.runs import RUN_FILE, write_json
from weitiao.training import distributed
from weitiao.training.checkpoints import last_complete
from weitiao.training.tracking import log_to_run_folder


@dataclass
class Fitted:
    """A finished `fit`: the trainer (its model is the trained one) and what the run measured."""

    trainer: object
    result: object  # transformers' TrainOutput
    seconds: float  # wall time of trainer.train, validation and checkpoints included
    step_seconds: float  # the training steps alone (training.callbacks.StepTimer)
    epochs_run: float  # epochs this process trained (a resumed run starts at its checkpoint's epoch)
    peak: dict  # the training phase's peak memory (memory.measured.training_peak)
    nonfinite_skipped: int
    extra: dict = field(default_factory=dict)  # what the workflow's own training context reported
    steps_run: int = 0  # optimizer steps this process took (a resumed run counts from its checkpoint)

    @property
    def model(self):
        return self.trainer.model

    @property
    def history(self) -> list[dict]:
        return self.trainer.state.log_history

    def train_metrics(self, precision: str) -> dict:
        """metrics.json's `train` entries every workflow reports the same way."""
        state = self.trainer.state
        return {"precision": precision, "steps": state.global_step, "epochs": round(state.epoch or 0, 4),
                "final_loss": next((h["loss"] for h in reversed(self.history) if "loss" in h), None),
                "train_loss_mean": round(self.result.training_loss, 6), "runtime_s": round(self.seconds, 1),
                "nonfinite_steps_skipped": self.nonfinite_skipped}

    def per_second(self, units: int) -> float:
        """`units` per epoch (rows, pairs, tokens) over the time of the training steps alone."""
        return round(units * self.epochs_run / max(self.step_seconds, 1e-9), 3)

    def per_run_second(self, units: int) -> float:
        """`units` this process trained on in all (a stream's rows or tokens) over the time of the training steps."""
        return round(units / max(self.step_seconds, 1e-9), 3)

    def common_metrics(self, device: str, estimate: dict | None, **val_columns: str) -> dict:
        """metrics.json's memory, validation and best-checkpoint entries; `val_columns` adds a column to each
        validation row from the trainer's log (`accuracy="eval_accuracy"`)."""
        state = self.trainer.state
        return {"memory": {**peak_memory(device, self.peak), "estimate": estimate},
                "val": [{"step": h["step"], "loss": h["eval_loss"], **{k: h.get(key) for k, key in val_columns.items()}}
                        for h in self.history if "eval_loss" in h],
                "best": {"checkpoint": state.best_model_checkpoint, "val_loss": state.best_metric}}


def fit(trainer, cfg, out_dir: Path, device: str, resume: bool, advice: str = "Lower train.learning_rate, or "
        "check the data for extreme rows.") -> Fitted:
    """Train `trainer` to the end under the guards above; `resume`: continue from the newest complete checkpoint
    in `out_dir/checkpoints`. `advice` ends the message of a run stopped by non-finite gradients."""
    from transformers import EarlyStoppingCallback

    from weitiao.training.callbacks import NonFiniteGuard, SaveOnInterrupt, SealCheckpoint, StepTimer

    guard, interrupt, timer = NonFiniteGuard(cfg.train.max_nonfinite_steps, log), SaveOnInterrupt(log), StepTimer()
    for callback in (guard, interrupt, timer, SealCheckpoint()):
        trainer.add_callback(callback)
    if cfg.train.early_stopping_patience and trainer.eval_dataset is not None:
        trainer.add_callback(EarlyStoppingCallback(early_stopping_patience=cfg.train.early_stopping_patience))
    log_to_run_folder(trainer, out_dir)
    checkpoints = out_dir / "checkpoints"
    start = distributed.on_main(lambda: last_complete(checkpoints, log)) if resume else None
    if resume:
        log(f"resuming from {start}" if start else "no complete checkpoint yet: training from the start")
    t0 = time.time()
    try:
        with training_peak(device) as peak:
            result = trainer.train(resume_from_checkpoint=str(start) if start else None)
    except (OSError, RuntimeError) as err:
        if not disk_full(err, out_dir):
            raise
        raise WeitiaoError(f"the disk holding {out_dir} is full ({str(err).strip()[:200]}). The last complete "
                           f"checkpoint is {last_complete(checkpoints, log) or 'none'}; free some space and run the "
                           "same command again to resume") from None
    except WeitiaoError as err:  # an input met while training: a bad streamed row, a reward that gave no number
        if distributed.world().main:
            write_json(out_dir / RUN_FILE, {"status": "failed", "reason": str(err).splitlines()[0][:300],
                                            "step": trainer.state.global_step})
        good = distributed.on_main(lambda: last_complete(checkpoints, log))
        fix = "fix the row (or set data.skip_bad_rows)" if isinstance(err, DataError) else "fix it"
        raise WeitiaoError(f"{err}\ntraining stopped at step {trainer.state.global_step}; the last complete checkpoint "
                           f"is {good or 'none'}: {fix} and run the same command with --resume to continue from "
                           "it") from None
    seconds = time.time() - t0
    main = distributed.world().main
    if guard.stopped_at is not None:
        if main:
            write_json(out_dir / RUN_FILE, {"status": "failed", "reason": "non-finite gradients"})
        good = distributed.on_main(lambda: last_complete(checkpoints, log))
        raise WeitiaoError(f"training stopped at step {guard.stopped_at}: {guard.consecutive} non-finite gradients "
                           f"in a row ({guard.skipped} steps skipped in all). The last good checkpoint is "
                           f"{good or 'none'}. {advice}")
    if interrupt.requested:
        step = trainer.state.global_step
        if main:
            write_json(out_dir / RUN_FILE, {"status": "interrupted", "step": step})
        good = distributed.on_main(lambda: last_complete(checkpoints, log))
        raise Interrupted(f"interrupted at step {step}: checkpoint saved in {good}; run the same command again to "
                          "resume")
    trainer.save_state()
    return Fitted(trainer, result, seconds, timer.seconds, (trainer.state.epoch or 0) - timer.start_epoch, peak,
                  guard.skipped, steps_run=timer.steps)


def disk_full(err: Exception, out_dir: Path) -> bool:
    """Whether a write error means the disk is full. torch.save reports it as a RuntimeError ("file write
    failed") without an errno, so the free space is checked too: less than the largest checkpoint means full."""
    import shutil

    if disk_full_error(err):
        return True
    ckpt_sizes = [sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
                  for p in (out_dir / "checkpoints").glob("checkpoint-*")]
    return shutil.disk_usage(out_dir).free < max(ckpt_sizes, default=1 << 20)
