"""bench/speed.py compares like with like: the three trainers train the same rows for the same steps, and their
step clock leaves out what happens between steps (validation, checkpoints, logging); bench/step_ab.py runs two
versions of one step on the same batches.

The two tests that run the benchmarks themselves (a process per trainer: about two minutes of the suite on 2 cores)
are marked slow, with the SmolLM2 demo proofs: `pytest -m slow` runs them. They guard the scripts that measure
performance, not what a user runs; the step clock and the held-out loss below are tested on every run.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from transformers import TrainerControl, TrainerState

from conftest import REPO
from weitiao.training import callbacks
from weitiao.training.callbacks import StepTimer


def test_step_timer_counts_steps_and_not_what_runs_between_them(monkeypatch):
    clock = iter([0.0, 2.0, 2.5, 9.0, 12.0, 12.5, 30.0, 33.0])
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: next(clock))
    timer, state, control = StepTimer(), TrainerState(), TrainerControl()
    state.epoch = 0.5  # resumed half-way
    timer.on_train_begin(None, state, control)  # 0.0
    timer.on_step_end(None, state, control)     # 2.0: step 1 took 2 s
    timer.on_log(None, state, control)          # 2.5: logging, not counted
    timer.on_step_end(None, state, control)     # 9.0: step 2 took 6.5 s
    timer.on_evaluate(None, state, control)     # 12.0: validation took 3 s, not counted
    timer.on_save(None, state, control)         # 12.5: checkpoint, not counted
    timer.on_step_end(None, state, control)     # 30.0: step 3 took 17.5 s
    assert (timer.seconds, timer.steps, timer.start_epoch) == (26.0, 3, 0.5)


@pytest.mark.slow
def test_speed_bench_trains_the_same_rows_and_steps_in_all_three_trainers(tmp_path, tiny_model_dir):
    out = tmp_path / "speed.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "speed.py"), "--model", str(tiny_model_dir), "--methods", "lora",
         "--data", "demo", "--rows", "8", "--batch", "4", "--rounds", "1", "--precision", "fp32",
         "--workdir", str(tmp_path / "work"), "--out", str(out),
         "--trainers", "weitiao,baseline,trl,plain,unsloth"],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    runs = {r["trainer"]: r["rounds"][0] for r in report["runs"]}
    # a peer that cannot run here (unsloth is not installed) is a row that says why, not a failed benchmark
    assert runs.pop("unsloth")["error"].startswith("ModuleNotFoundError")
    assert set(runs) == {"weitiao", "baseline", "trl", "plain"}
    assert {r["steps"] for r in runs.values()} == {2}  # one epoch of 8 rows in batches of 4
    # weitiao's answers end at the end-of-turn token; the plain recipe and TRL also train the newline after it
    assert runs["baseline"]["trained_tokens"] == runs["trl"]["trained_tokens"] == runs["plain"]["trained_tokens"]
    assert 0 <= runs["baseline"]["trained_tokens"] - runs["weitiao"]["trained_tokens"] <= 8
    assert runs["weitiao"]["batches"] in ("padding_free", "padded", "mixed") and runs["weitiao"]["logits"] == "fused"
    losses = [r["heldout_loss"] for r in runs.values()]
    assert max(losses) / min(losses) - 1 < 0.01, losses  # the same training, however it is batched
    assert all(r["step_seconds"] > 0 and r["peak_bytes"] > 2**20 for r in runs.values())
    assert report["matmul_peak_flops"]["fp32"] > 1e8 and report["flops"]["demo/lora"] > 0
    # the MFU ceiling: the tiny model's own matmuls at the demo's packed row of 4 examples, rounded up to 64 tokens
    ceiling = report["decoder_matmul_share"]["fp32/demo"]
    assert 0 < ceiling["share"] and ceiling["decoder_flops_per_s"] > 0
    assert ceiling["row_tokens"] % 64 == 0 and ceiling["row_tokens"] >= 64
    assert "MFU ceiling, fp32/demo" in proc.stdout
    table = report["table"]  # a header, then one row per trainer (one precision here: each row is a process)
    assert table[2].split()[0] == "fp32/demo/lora/baseline" and " 1.00x" in table[2]
    assert len(table) == 6 and "could not run: ModuleNotFoundError" in table[5], proc.stdout


def test_heldout_loss_scores_each_answer_through_its_end_of_turn_token_not_the_newline_after_it():
    sys.path.insert(0, str(REPO / "bench"))
    from speed import scored_length

    from weitiao.testing import build_tokenizer

    tokenizer = build_tokenizer()
    answer = tokenizer("hello<|im_end|>\n", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(answer[-2:]) == "<|im_end|>\n"
    labels = [-100, -100, -100] + answer
    assert scored_length(tokenizer, labels) == len(labels) - 1  # the newline the template adds is not scored
    assert scored_length(tokenizer, labels[:-1]) == len(labels) - 1  # nothing after the end-of-turn: all scored


@pytest.mark.slow
def test_step_ab_runs_both_versions_on_the_same_batches(tmp_path, tiny_model_dir):
    """bench/step_ab.py, variant casts: the two versions of the step alternate on the same batches and weights, so
    their losses agree exactly (skipping peft's round trip through fp32 changes no bit)."""
    out = tmp_path / "ab.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "step_ab.py"), "--model", str(tiny_model_dir), "--variants", "casts",
         "--batches", "2", "--rounds", "2", "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    casts = json.loads(out.read_text())["results"]["casts"]
    assert casts["steps_each"] == 4 and casts["max_rel_loss_diff"] == 0.0
    assert casts["speedup"] > 0 and all(t > 0 for t in casts["median_step_s"].values())
    assert "casts: baseline" in proc.stdout
