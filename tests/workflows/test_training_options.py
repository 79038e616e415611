"""Training switches on the tiny model: gradient checkpointing, accumulation, early stopping, other formats."""
from __future__ import annotations

import json

import pytest

from conftest import write_config
from weitiao.config import load_config
from weitiao.training import causal_lm
from weitiao.workflows import sft

NO_EVAL = {"metrics": [], "compare_base": False}


def test_gradient_checkpointing_and_accumulation_give_the_same_update(tmp_path, tiny_model_dir, demo_data_dir):
    """Same examples per optimizer step: 1 x (batch 4) vs 2 x (batch 2, accumulated), with and without GC."""
    losses = {}
    for name, train in {
        "plain": {"batch_size": 4, "grad_accum": 1},
        "accum_gc": {"batch_size": 2, "grad_accum": 2, "gradient_checkpointing": True},
    }.items():
        cfg = write_config(tmp_path / f"{name}.yaml", tiny_model_dir, demo_data_dir, tmp_path / name,
                           train={**train, "max_steps": 3, "eval_steps": 3, "group_by_length": False,
                                  "learning_rate": 1e-2}, eval=NO_EVAL)
        result = sft.run(load_config(cfg))
        losses[name] = result.metrics["val"][-1]["loss"]
    # padding differs between the two batchings, so the match is close, not exact
    assert abs(losses["plain"] - losses["accum_gc"]) < 2e-3 * abs(losses["plain"])


def test_early_stopping_stops_and_keeps_the_best(tmp_path, tiny_model_dir, demo_data_dir):
    # lr 3.0 makes validation loss get worse right away: patience 1 must stop long before 30 steps
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, demo_data_dir, tmp_path / "run",
                       method={"name": "full"}, eval=NO_EVAL,
                       train={"max_steps": 30, "eval_steps": 1, "learning_rate": 3.0, "early_stopping_patience": 1,
                              "lr_scheduler": "constant", "warmup_ratio": 0.0, "save_total_limit": 1})
    result = sft.run(load_config(cfg))
    val = result.metrics["val"]
    assert result.metrics["train"]["steps"] < 30
    best = min(val, key=lambda v: v["loss"])
    assert result.metrics["best"]["val_loss"] == best["loss"]
    assert result.metrics["best"]["checkpoint"].endswith(f"checkpoint-{best['step']}")


def test_alpaca_csv_with_ratio_splits_trains(tmp_path, tiny_model_dir):
    import csv

    with open(tmp_path / "d.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["question", "answer"])
        rows = [[f"List {i % 10 + 1} colors, set {i}.", "\n".join(f"{k}. Red" for k in range(1, i % 10 + 2))]
                for i in range(40)]
        w.writerows(rows + rows[:4])  # 4 exact duplicates
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, tmp_path, tmp_path / "run",
                       data={"format": "alpaca", "train": "d.csv", "val": [], "test": [], "val_ratio": 0.1,
                             "test_ratio": 0.1, "columns": {"instruction": "question", "output": "answer"}})
    result = sft.run(load_config(cfg))
    report = json.loads((result.out_dir / "data_report.json").read_text())
    assert report["train_duplicates_dropped"] == 4
    assert (report["train_rows"], report["val_rows"], report["test_rows"]) == (32, 4, 4)
    predictions = (result.out_dir / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 4 and set(result.metrics["test"]["tuned"]) >= {"loss", "count_list"}


def test_precision_auto_uses_bf16_only_where_it_is_native(monkeypatch):
    """On an AVX2-only CPU, bf16 is emulated (measured 0.8 vs 74 GFLOP/s fp32), and with avx512_bf16 but no AMX
    a LoRA step took twice as long as in fp32: auto must pick fp32 on both, and an explicit bf16 gets a warning;
    with AMX, auto picks bf16."""
    import torch

    from weitiao.models import precision as common

    assert not common.cpu_bf16_native({"avx2", "fma"})
    assert not common.cpu_bf16_native({"avx2", "avx512f", "avx512_bf16"})
    assert common.cpu_bf16_native({"avx512f", "avx512_bf16", "amx_tile", "amx_bf16"})

    monkeypatch.setattr(common, "cpu_bf16_native", lambda: False)
    assert common.autocast_dtype("auto", "cpu") is None
    assert "slower than fp32" in common.precision_warning("bf16", "cpu")
    assert common.precision_warning("fp32", "cpu") is None
    monkeypatch.setattr(common, "cpu_bf16_native", lambda: True)
    assert common.autocast_dtype("auto", "cpu") is torch.bfloat16
    assert common.precision_warning("bf16", "cpu") is None


@pytest.mark.parametrize("native, precision, method, task, dtype, want", [
    (True, "auto", "lora", "sft", "auto", "bfloat16"),      # frozen base under bf16 autocast: stored in bf16
    (True, "bf16", "lora", "sft", "auto", "bfloat16"),
    (True, "auto", "prefix", "sft", "auto", "float32"),     # frozen too, but not measured with bf16 weights
    (True, "auto", "full", "sft", "auto", "float32"),       # trained weights keep fp32 master copies
    (True, "auto", "freeze", "sft", "auto", "float32"),
    (True, "auto", "qlora", "sft", "auto", "float32"),      # quantized; its own compute dtype
    (True, "fp32", "lora", "sft", "auto", "float32"),       # fp32 asked for: fp32 weights
    (True, "auto", "lora", "dpo", "auto", "float32"),       # measured for sft only
    (False, "auto", "lora", "sft", "auto", "float32"),      # AVX2: no bf16 autocast, no bf16 weights
    (False, "auto", "full", "sft", "bfloat16", "bfloat16"),  # an explicit dtype is kept
])
def test_weights_dtype_auto_on_a_cpu(monkeypatch, native, precision, method, task, dtype, want):
    from weitiao.config import Config
    from weitiao.memory.guard import settings_for
    from weitiao.models import precision as common

    monkeypatch.setattr(common, "cpu_bf16_native", lambda: native)
    cfg = Config()
    cfg.task, cfg.method.name, cfg.model.dtype, cfg.train.precision = task, method, dtype, precision
    assert common.weights_dtype(cfg, "cpu") == want
    assert settings_for(cfg, "cpu", 64).weights_dtype == want  # the memory estimate assumes what will be loaded


@pytest.mark.parametrize("packed_attention", ["segments", "mask"])
def test_padding_free_training_matches_padded_training(tmp_path, tiny_model_dir, demo_data_dir, monkeypatch,
                                                       packed_attention):
    """The same run with padding-free batches and with padded ones: the same losses at every step (float noise),
    with packed rows attended one example at a time (`segments`) or under sdpa's block mask (`mask`).
    LoRA dropout 0, because dropout masks of a (1, sum) row and a (B, longest) batch draw different numbers.
    Attention is made free in the batch cost model, so that every batch of the first run is packed."""
    monkeypatch.setattr(causal_lm, "PAIR_PACKED", 0.0)
    runs = {}
    for padding_free in (True, False):
        name = "packed" if padding_free else "padded"
        cfg = write_config(tmp_path / f"{name}.yaml", tiny_model_dir, demo_data_dir, tmp_path / name,
                           method={"name": "lora", "lora": {"r": 4, "alpha": 8, "dropout": 0.0}}, eval=NO_EVAL,
                           train={"max_steps": 6, "eval_steps": 3, "learning_rate": 1e-2, "padding_free": padding_free,
                                  "packed_attention": packed_attention})
        result = sft.run(load_config(cfg))
        state = json.loads((result.out_dir / "trainer_state.json").read_text())
        runs[name] = ([h["loss"] for h in state["log_history"] if "loss" in h],
                      [v["loss"] for v in result.metrics["val"]], result.metrics["train"]["batches"],
                      result.metrics["train"]["packed_attention"])
    assert runs["packed"][2] == "padding_free" and runs["padded"][2] == "padded"
    assert runs["packed"][3] == packed_attention and runs["padded"][3] is None  # no packed rows: nothing to split
    assert len(runs["packed"][0]) == 6
    for a, b in zip(runs["packed"][0] + runs["packed"][1], runs["padded"][0] + runs["padded"][1]):
        assert a == pytest.approx(b, rel=1e-5)


def test_batch_cost_comes_from_the_model_shape():
    from types import SimpleNamespace

    from weitiao.testing import build_model

    model = build_model(600, hidden=64, layers=2)  # tied embeddings: the head is the embedding matrix
    cost = causal_lm.batch_cost(model, labels_only=True)
    n_linear = sum(p.numel() for p in model.parameters()) - 600 * 64
    assert cost.pair_packed == pytest.approx(causal_lm.PAIR_PACKED * 4 * 2 * 64 / (2 * n_linear))
    assert cost.head == pytest.approx(600 * 64 / n_linear) and not cost.varlen
    # a config that does not name its layers the transformers way: attention free, every batch packed as before
    odd = SimpleNamespace(config=SimpleNamespace(hidden_size=64))
    assert causal_lm.batch_cost(odd, labels_only=True).pair_packed == 0.0


@pytest.mark.slow  # torch.compile's inductor builds C++ kernels: a minute or more on a 2-core CPU (pytest -m slow)
def test_compiled_layers_train_like_eager_ones_and_the_run_is_usable_after(tmp_path, tiny_model_dir, demo_data_dir):
    """train.compile: the same steps, compiled and eager, end at the same validation loss within float noise; the
    run records it, the layers are eager again afterwards (the test split's generation ran), and the adapter saved
    from the compiled run reloads."""
    from peft import PeftModel

    from weitiao.models.loading import load_model

    results = {}
    for compiled in (False, True):
        cfg = write_config(tmp_path / f"{compiled}.yaml", tiny_model_dir, demo_data_dir, tmp_path / str(compiled),
                           train={"max_steps": 4, "eval_steps": 4, "learning_rate": 1e-2, "precision": "fp32",
                                  "compile": compiled},
                           eval={"metrics": ["exact_match"], "compare_base": False, "max_samples": 2})
        results[compiled] = sft.run(load_config(cfg))
    eager, fast = (results[c].metrics for c in (False, True))
    assert eager["train"]["compiled_layers"] == 0 and fast["train"]["compiled_layers"] == 2
    assert fast["val"][-1]["loss"] == pytest.approx(eager["val"][-1]["loss"], rel=1e-4)
    assert "exact_match" in fast["test"]["tuned"]
    layer = results[True].model.base_model.model.model.layers[0]
    assert layer._compiled_call_impl is None
    reloaded = PeftModel.from_pretrained(load_model(str(tiny_model_dir), None, "cpu"), tmp_path / "True" / "adapter")
    assert sum(p.numel() for n, p in reloaded.named_parameters() if "lora_" in n) > 0


def test_compile_is_refused_where_it_does_not_apply(tmp_path, tiny_model_dir, demo_data_dir):
    from weitiao.errors import ConfigError

    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, demo_data_dir, tmp_path / "run",
                       method={"name": "prefix"}, train={"compile": True})
    with pytest.raises(ConfigError, match="train.compile: applies to task sft with full, freeze, lora or qlora"):
        load_config(cfg)
