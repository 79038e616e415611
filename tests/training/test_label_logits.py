"""Logits at label positions only: the same loss and gradients as the full-logits loss, in a batch and in a run."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import write_config
from weitiao.config import load_config
from weitiao.data.dataset import PadCollator, PaddingFreeCollator
from weitiao.training.label_logits import LabelPositionsCollator, label_positions_loss, supports_logits_to_keep
from weitiao.workflows import sft


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "padding_free"])
@pytest.mark.parametrize("arch", ["llama", "glm4"])
def test_label_positions_loss_and_gradients_equal_the_full_logits_ones(tiny_tokenizer, arch, packed):
    """Three rows whose answers sit at different places; num_items_in_batch as the Trainer gives it (a larger
    accumulated batch): transformers' own loss (every position's logits) against the label-positions loss."""
    from weitiao.testing import build_model

    model = build_model(len(tiny_tokenizer), arch=arch)
    assert supports_logits_to_keep(model)
    rows = [{"input_ids": list(range(5, 5 + n)), "labels": [-100] * p + list(range(5 + p, 5 + n))}
            for n, p in ((7, 3), (12, 9), (20, 5))]
    inner = PaddingFreeCollator() if packed else PadCollator(tiny_tokenizer.pad_token_id)
    full, sparse = inner(rows), LabelPositionsCollator(inner)(rows)
    n_items = torch.tensor(40)  # as if other micro-batches of the same optimizer step held more labels
    assert sparse["logits_to_keep"].numel() < full["input_ids"].shape[1] - 1  # the prompt positions are skipped
    assert int((sparse["labels"][:, 1:] != -100).sum()) == int((full["labels"][:, 1:] != -100).sum())
    losses, grads = [], []
    for batch, own in ((full, False), (sparse, True)):
        model.zero_grad()
        batch = dict(batch)
        if own:
            labels = batch.pop("labels")
            loss = label_positions_loss(model(**batch), labels, num_items_in_batch=n_items)
        else:
            loss = model(**batch, num_items_in_batch=n_items).loss
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert float((grads[0] - grads[1]).abs().max()) < 1e-6


def test_runs_with_fused_loss_label_logits_and_full_logits_match(tmp_path, tiny_model_dir, demo_data_dir):
    """Gradient accumulation 2, validation and the test split: every logged loss of a run with the fused loss
    (train.fused_loss), one with label-position logits and one with every position's logits equal (float noise)."""
    runs = {}
    for name, fused, sparse in (("fused", True, True), ("sparse", False, True), ("full", False, False)):
        cfg = write_config(tmp_path / f"{name}.yaml", tiny_model_dir, demo_data_dir, tmp_path / name,
                           method={"name": "lora", "lora": {"r": 4, "alpha": 8, "dropout": 0.0}},
                           eval={"metrics": [], "forgetting": False, "report": False},
                           train={"max_steps": 4, "eval_steps": 2, "grad_accum": 2, "learning_rate": 1e-2,
                                  "fused_loss": fused, "fused_loss_chunk": 16, "logits_at_labels_only": sparse})
        result = sft.run(load_config(cfg))
        state = json.loads((result.out_dir / "trainer_state.json").read_text())
        runs[name] = ([h["loss"] for h in state["log_history"] if "loss" in h],
                      [v["loss"] for v in result.metrics["val"]], result.metrics["test"]["tuned"]["loss"],
                      result.metrics["train"]["logits"])
    assert [runs[name][3] for name in ("fused", "sparse", "full")] == ["fused", "label_positions", "all_positions"]
    assert len(runs["full"][0]) == 4 and len(runs["full"][1]) == 2
    for name in ("fused", "sparse"):
        for a, b in zip(runs[name][0] + runs[name][1] + [runs[name][2]],
                        runs["full"][0] + runs["full"][1] + [runs["full"][2]]):
            assert a == pytest.approx(b, rel=1e-5)
