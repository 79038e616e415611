from __future__ import annotations

import json

import pytest

from weitiao.config import DataConfig
from weitiao.data.dataset import PadCollator, PaddingFreeCollator, encode_split, load_splits
from weitiao.data.encode import IGNORE_INDEX
from weitiao.data.templates import resolve_template
from weitiao.errors import DataError


def write_rows(path, n, dup=0, empty=0):
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(n)]
    rows += rows[:dup] + [{"instruction": "", "output": ""}] * empty
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_ratio_split_is_seeded_and_disjoint(tmp_path):
    write_rows(tmp_path / "all.jsonl", 100, dup=5, empty=2)
    cfg = DataConfig(format="alpaca", train=["all.jsonl"], val_ratio=0.1, test_ratio=0.2, split_seed=3)
    a = load_splits(cfg, str(tmp_path))
    b = load_splits(cfg, str(tmp_path))
    assert (len(a.train), len(a.val), len(a.test)) == (70, 10, 20)
    assert a.report["train_duplicates_dropped"] == 5 and a.report["train_empty_rows_dropped"] == 2
    assert [e.messages for e in a.val] == [e.messages for e in b.val]
    keys = lambda xs: {e.messages for e in xs}  # noqa: E731
    assert not (keys(a.train) & keys(a.val)) and not (keys(a.train) & keys(a.test))
    c = load_splits(DataConfig(format="alpaca", train=["all.jsonl"], val_ratio=0.1, split_seed=4), str(tmp_path))
    assert [e.messages for e in c.val] != [e.messages for e in a.val]


def test_bad_rows_across_files_reported_together(tmp_path):
    (tmp_path / "t.jsonl").write_text('{"instruction": "q"}\n{"instruction": "q", "output": "a"}\n'
                                      '{"output": "a"}\n')
    with pytest.raises(DataError) as info:
        load_splits(DataConfig(format="alpaca", train=["t.jsonl"]), str(tmp_path))
    msg = str(info.value)
    assert "t.jsonl line 1: missing field 'output'" in msg and "t.jsonl line 3: missing field 'instruction'" in msg


@pytest.mark.parametrize("policy,kept,truncated,dropped", [("truncate", 3, 1, 0), ("drop", 2, 0, 1)])
def test_overlong_rows_truncated_or_dropped_and_counted(tmp_path, tiny_tokenizer, policy, kept, truncated,
                                                         dropped):
    rows = [{"instruction": "q", "output": "a"}, {"instruction": "q2", "output": "b"},
            {"instruction": "q3", "output": " ".join(["word"] * 60)}]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DataConfig(format="alpaca", train=["t.jsonl"], max_length=24, overlong=policy)
    splits = load_splits(cfg, str(tmp_path))
    tpl = resolve_template(tiny_tokenizer, "auto")
    enc = encode_split(splits.train, tpl, tiny_tokenizer, cfg, "train", splits.report)
    assert len(enc) == kept
    assert splits.report["train_truncated"] == truncated and splits.report["train_overlong_dropped"] == dropped
    assert all(len(e.input_ids) <= 24 for e in enc)


def test_pad_collator():
    batch = PadCollator(pad_id=0, pad_to_multiple_of=4)([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
                                                          {"input_ids": [8], "labels": [8]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [8, 0, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7, IGNORE_INDEX], [8] + [IGNORE_INDEX] * 3]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]


@pytest.mark.parametrize("multiple", [1, 16], ids=["exact", "rounded"])
@pytest.mark.parametrize("arch, attention", [(arch, kind) for arch in ("llama", "glm", "glm4")
                                             for kind in (None, "segments")] + [("llama", "flex")],
                         ids=lambda v: v or "mask")
def test_padding_free_batch_has_the_padded_batch_loss_and_gradients(tiny_tokenizer, arch, attention, multiple):
    """Three examples of different lengths: one padded batch (3, 24) vs one row (1, 39) with restarting position
    ids. Same loss and same gradients: no example attends to another, no label crosses a boundary. Under sdpa's
    block-diagonal mask (`mask`), under weitiao's one-call-per-example attention (`segments`), and under
    FlexAttention with the row's document mask (`flex`, compiled, as on a GPU; torch has no FlexAttention
    backward on a CPU, so there the loss alone: bench/flex_check.py compares the gradients on a GPU), each of
    which hands the padded batch to sdpa. `rounded`: the row is filled up to 48 tokens with a 9-token filler example of pad tokens
    (train.padding_free_multiple), which changes neither."""
    import torch

    from weitiao.testing import build_model
    from weitiao.training.padding_free import keeps_examples_apart
    from weitiao.training.segment_attention import PACKED_ATTENTIONS, training_attention

    model = build_model(len(tiny_tokenizer), arch=arch)
    rows = [{"input_ids": list(range(5, 5 + n)), "labels": [-100] * 3 + list(range(8, 5 + n))} for n in (7, 12, 20)]
    pad = tiny_tokenizer.pad_token_id
    padded, packed = PadCollator(pad)(rows), PaddingFreeCollator(pad, multiple)(rows)
    fill = 9 if multiple == 16 else 0
    assert packed["input_ids"].shape == (1, 39 + fill) and packed["use_cache"] is False
    assert packed["position_ids"][0].tolist() == list(range(7)) + list(range(12)) + list(range(20)) + list(range(fill))
    assert packed["cu_seq_lens_q"].tolist() == [0, 7, 19, 39] + ([48] if fill else [])
    assert packed["max_length_q"] == 20
    assert packed["input_ids"][0, 39:].tolist() == [pad] * fill and packed["labels"][0, 39:].tolist() == [-100] * fill
    losses, grads = [], []
    with training_attention(model, attention):
        assert model.config._attn_implementation == PACKED_ATTENTIONS.get(attention, "sdpa")
        assert keeps_examples_apart(model, len(tiny_tokenizer), collator=PaddingFreeCollator(pad, multiple))
        backward = attention != "flex"
        for batch in (padded, packed):
            model.zero_grad()
            with torch.set_grad_enabled(backward):
                loss = model(**batch).loss
            losses.append(loss.item())
            if backward:
                loss.backward()
                grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert model.config._attn_implementation == "sdpa"  # as loaded, once training is over
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    assert not grads or float((grads[0] - grads[1]).abs().max()) < 1e-5


def test_a_model_that_mixes_packed_examples_is_found_out():
    """A model whose tokens see every earlier token of the row (it ignores position ids) fails the check."""
    from types import SimpleNamespace

    import torch

    from weitiao.training.padding_free import keeps_examples_apart

    class Mixing(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(50, 8)

        def forward(self, input_ids, position_ids=None, use_cache=None, **variable_length_keywords):
            hidden = self.embed(input_ids).cumsum(dim=1)  # (B, T, 8): each position sums all earlier tokens
            return SimpleNamespace(logits=hidden)

    assert not keeps_examples_apart(Mixing(), 50)
    assert not keeps_examples_apart(Mixing(), 50, collator=PaddingFreeCollator(0, 64))  # with a filler after them


def _rows(lengths, answer=3):
    """Features of the given lengths, each with its last `answer` tokens as labels."""
    return [{"input_ids": list(range(5, 5 + n)), "labels": [IGNORE_INDEX] * (n - answer) + list(range(answer))}
            for n in lengths]


def test_batch_cost_packs_short_mixed_rows_and_pads_long_even_ones():
    from weitiao.data.dataset import BatchCost

    # SmolLM2-135M's shape (30 layers, width 576, 106M linear weights): one attention pair = 3.3e-4 of a token
    unit = 4 * 30 * 576 / (2 * 106e6)
    cost = BatchCost(pair_packed=1.3 * unit, pair_padded=1.1 * unit, head=49152 * 576 / 106e6)
    short_mixed = _rows([40, 110, 45, 100, 50, 90, 60, 70])
    assert cost.packed(short_mixed) < cost.padded(short_mixed)  # padding wastes more than the extra pairs cost
    long_even = _rows([380, 384, 376, 384, 370, 384, 382, 378])
    assert cost.padded(long_even) < cost.packed(long_even)  # a 3,038-token row scores 8x the pairs
    # a variable-length kernel scores no cross-example pair: packing is never the dearer one
    varlen = BatchCost(pair_packed=1.3 * unit, pair_padded=1.1 * unit, head=0.27, varlen=True)
    assert varlen.packed(long_even) < varlen.padded(long_even)
    # a row rounded up to a multiple of 64 (3,038 -> 3,072 tokens) pays for its 34-token filler example
    rounded = BatchCost(pair_packed=1.3 * unit, pair_padded=1.1 * unit, head=0.27, varlen=True, packed_multiple=64)
    filler = rounded.packed(long_even) - varlen.packed(long_even)
    assert filler == pytest.approx(34 + 1.1 * unit * 34 * 34 / 2)
    # label-position logits: a padded batch gets them at every row of each column where some row has a label
    assert cost.padded(_rows([8, 16])) - BatchCost(cost.pair_packed, cost.pair_padded, 0.0).padded(_rows([8, 16])) \
        == pytest.approx(cost.head * 2 * 6)  # 2 rows x columns 4-6 (the first row's labels) and 12-14 (the second's)


def test_cheaper_batch_collator_chooses_per_batch_and_counts(tiny_tokenizer):
    from weitiao.data.dataset import BatchCost, CheaperBatchCollator

    collate = CheaperBatchCollator(tiny_tokenizer.pad_token_id, BatchCost(pair_packed=1e-3, pair_padded=1e-3,
                                                                           head=0.0))
    mixed = collate(_rows([6, 30]))          # 36 tokens in one row against 2 x 32 padded: packed
    even = collate(_rows([300, 300, 300]))   # 900 x 900 pairs packed against 3 x 304^2 / 2: padded
    assert mixed["input_ids"].shape == (1, 36) and "position_ids" in mixed
    assert even["input_ids"].shape == (3, 304) and "attention_mask" in even
    assert collate.counts == {"padding_free": 1, "padded": 1}
