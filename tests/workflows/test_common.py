"""Helpers every workflow shares (workflows.common)."""
from __future__ import annotations

import pytest
import torch

from weitiao.data.encode import IGNORE_INDEX, Encoded
from weitiao.testing import build_model
from weitiao.evaluation.scoring import mean_loss, token_losses


def test_token_losses_are_each_rows_summed_cross_entropy_over_its_labels(tiny_tokenizer):
    """Rows of different lengths, batched with padding (3 rows in batches of 2): each row's (sum, count) equals its
    loss computed alone, and the token-weighted mean follows."""
    model = build_model(len(tiny_tokenizer)).eval()
    rows = [Encoded(list(range(5, 5 + n)), [IGNORE_INDEX] * prompt + list(range(5 + prompt, 5 + n)))
            for n, prompt in ((7, 3), (12, 5), (20, 2))]
    got = token_losses(model, rows, tiny_tokenizer.pad_token_id, batch_size=2)
    for (total, count), row in zip(got, rows):
        with torch.no_grad():
            alone = model(input_ids=torch.tensor([row.input_ids]), labels=torch.tensor([row.labels])).loss.item()
        n_labels = sum(1 for x in row.labels[1:] if x != IGNORE_INDEX)
        assert count == n_labels
        assert total == pytest.approx(alone * n_labels, rel=1e-5)
    assert mean_loss(got) == pytest.approx(sum(t for t, _ in got) / sum(n for _, n in got))
