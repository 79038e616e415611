"""Experiment trackers (train.report_to): TensorBoard by default, W&B, MLflow, Trackio or SwanLab.

The Trainer's own integrations (transformers.integrations) do the logging: the training loss, learning rate and
gradient norm at every logging step, and each validation. weitiao adds two things they do not do:
- TensorBoard's event files go in the run folder (`RUN/logs/`), next to the run they describe, instead of the
  checkpoints folder the callback would pick;
- at the end, the run's results (the base and tuned model on the test split, the forgetting check, the held-out
  preference pairs, the rephrased questions) go to the same trackers at the last step, under `test/...`, so a
  dashboard shows whether fine-tuning helped next to the curve of how it trained.
"""
from __future__ import annotations

from pathlib import Path

RESULT_SECTIONS = ("forgetting", "preference", "rephrased")  # metrics.json's result sections besides `test`


def log_to_run_folder(trainer, out_dir: Path) -> None:
    """Point the TensorBoard integration (if the run uses it) at `out_dir/logs`."""
    from transformers.integrations import TensorBoardCallback

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback):
            callback.logging_dir = str(out_dir / "logs")


def log_results(trainer, metrics: dict) -> None:
    """The run's final results, to every tracker integration the trainer has, at the last step. The integrations
    name a `test_` key `test/...` (transformers' rewrite_logs)."""
    from transformers.integrations import get_reporting_integration_callbacks

    report_to = trainer.args.report_to
    integrations = tuple(get_reporting_integration_callbacks(report_to)) if report_to else ()
    callbacks = [c for c in trainer.callback_handler.callbacks if integrations and isinstance(c, integrations)]
    if not callbacks:
        return
    results = flat(metrics.get("test") or {}, "test_")
    for section in RESULT_SECTIONS:
        results.update(flat(metrics.get(section) or {}, f"test_{section}/"))
    for callback in callbacks:
        callback.on_log(trainer.args, trainer.state, trainer.control, logs=results)


def flat(section: dict, prefix: str) -> dict:
    """The numbers of a nested metrics section as `prefix + a/b/c` keys (lists, such as per-row scores, left out)."""
    found = {}
    for key, value in section.items():
        if isinstance(value, dict):
            found.update(flat(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            found[f"{prefix}{key}"] = value
    return found
