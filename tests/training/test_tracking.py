"""train.report_to: a finished run's TensorBoard event files (read back with TensorBoard's own reader) hold its
training curve, its validation losses and its final base-vs-tuned results; a tracker that is named but not
installed is refused before anything is written."""
from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import run_cli, tensorboard_scalars, write_config
from weitiao.config import TRACKERS


def test_the_event_files_hold_the_curve_the_validation_and_the_results(lora_run_dir):
    """lora_run_dir trains with the default train.report_to, [tensorboard]."""
    metrics = json.loads((lora_run_dir / "metrics.json").read_text())
    history = json.loads((lora_run_dir / "trainer_state.json").read_text())["log_history"]
    found = tensorboard_scalars(lora_run_dir / "logs")

    losses = [(h["step"], h["loss"]) for h in history if "loss" in h]
    assert len(losses) == metrics["train"]["steps"] == 4  # logging_steps 1
    assert [s for s, _ in found["train/loss"]] == [s for s, _ in losses]
    assert [v for _, v in found["train/loss"]] == pytest.approx([v for _, v in losses], rel=1e-5)
    assert [(s, pytest.approx(v, rel=1e-5)) for s, v in found["eval/loss"]] == \
        [(row["step"], row["loss"]) for row in metrics["val"]]
    last = metrics["train"]["steps"]
    numbers = 0
    for side in ("base", "tuned"):
        for name, value in metrics["test"][side].items():
            if isinstance(value, (int, float)):
                assert found[f"test/{side}/{name}"] == [(last, pytest.approx(value, rel=1e-5))], name
                numbers += 1
    assert numbers >= 6  # loss, perplexity, count_list, exact_match on each side
    if metrics.get("forgetting"):
        assert found["test/forgetting/tuned_loss"] == [(last, pytest.approx(metrics["forgetting"]["tuned_loss"],
                                                                             rel=1e-5))]


def test_a_tracker_named_but_not_installed_is_refused_before_anything_is_written(tmp_path, tiny_model_dir,
                                                                                   demo_data_dir):
    missing = [name for name, (module, _) in TRACKERS.items() if importlib.util.find_spec(module) is None]
    assert missing, "every tracker is installed here: nothing to refuse"
    name = missing[0]
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, demo_data_dir, out, train={"report_to": [name]})
    for command in ("validate", "train"):
        result = run_cli(command, cfg)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert f"train.report_to: {name} is not installed (pip install {TRACKERS[name][1]})" in result.stderr
        assert not out.exists()
    result = run_cli("validate", cfg, "train.report_to=[none,tensorboard]")
    assert result.returncode == 2 and "train.report_to: `none` with other trackers (tensorboard)" in result.stderr
    result = run_cli("validate", cfg, "train.report_to=tensorbord")
    assert result.returncode == 2 and "did you mean 'tensorboard'" in result.stderr, result.stderr
