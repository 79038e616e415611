"""bench/memory_grid.py's child: one setting measured through weitiao's own loss paths, next to its estimate."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import memory_grid  # noqa: E402
from weitiao.memory.estimate import load_constants  # noqa: E402
from weitiao.memory.shape import load_config_dict, model_shape  # noqa: E402


@pytest.mark.parametrize("loss", ["fused", "full"])
def test_grid_setting_trains_three_steps_and_is_estimated(tiny_model_dir, loss):
    spec = dict(model="tiny", method="lora", seq=64, batch=2, precision="fp32", gc=False, device="cpu",
                loss=loss, folder=str(tiny_model_dir))
    # in a fresh process, as the grid runs each setting: a process's peak RSS only grows, so in this test
    # session's process the tiny model's peak would hide under what earlier tests left
    result, proc = memory_grid.run_child(spec, timeout=600)
    assert result is not None, proc.stderr[-2000:]
    # the tiny model may not raise the peak the imports set before loading (rss_before_load): >=, not >
    assert result["measured"] >= result["rss_before_load"] > 0 and result["trainable"] < result["total"]
    assert result["step_s"] > 0
    est = memory_grid.estimate_for(spec)
    vocab = model_shape(load_config_dict(str(tiny_model_dir))).vocab
    # the fused loss holds one chunk's buffers, here the whole batch (128 positions < 1024), 8 bytes an entry;
    # transformers' loss the whole logits with the fitted constant
    if loss == "fused":
        assert est["logits_and_loss"] == 128 * 8 * vocab
    else:
        assert est["logits_and_loss"] == int(128 * load_constants()["cpu"]["logits"] * vocab)


def test_the_grid_fuses_the_loss_where_weitiao_does():
    grid = memory_grid.settings("cpu", quick=True)
    assert {g["loss"] for g in grid if g["method"] in ("full", "freeze", "lora", "qlora")} == {"fused"}
    assert {g["loss"] for g in grid if g["method"] in ("prefix", "prompt")} == {"full"}
