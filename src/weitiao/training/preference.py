"""TRL's preference trainers fed with pairs weitiao tokenized itself.

ORPO and SimPO (TRL's ORPOTrainer, and CPOTrainer with loss_type simpo) live in `trl.experimental` in TRL 1.x:
they tokenize in `tokenize_row`, which the subclasses below replace with the ids weitiao made.

`data.encode.encode_pair` cuts prompt and answers exactly as SFT does (the run's chat template, segment by segment),
so the prompt ids a DPO step sees are the ids `weitiao chat`/`serve` send at inference. TRL's DPOTrainer would
otherwise re-render each pair with the tokenizer's template in one piece and re-tokenize it; its RewardTrainer
already accepts tokenized pairs (`chosen_ids`/`rejected_ids`) as they are.
"""
from __future__ import annotations

import random

from trl import DPOTrainer, KTOTrainer

from weitiao.data.encode import EncodedPair


class TokenizedDPOTrainer(DPOTrainer):
    """DPOTrainer whose datasets already hold `prompt_ids`, `chosen_ids` and `rejected_ids`."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        missing = {"prompt_ids", "chosen_ids", "rejected_ids"} - set(dataset.column_names)
        if missing:  # a weitiao bug: every dataset given to this trainer comes from pair_dataset()
            raise ValueError(f"{dataset_name} dataset lacks {sorted(missing)}")
        return dataset


class TokenizedKTOTrainer(KTOTrainer):
    """KTOTrainer whose datasets already hold `prompt_ids`, `completion_ids` and `label` (unpaired rows).

    KTO estimates its KL term from mismatched (prompt, completion) rows: within each batch the completions are
    rotated by one, (x_1, y_1) ... (x_n, y_n) -> (x_1, y_n), (x_2, y_1), ... (Ethayarajh et al. 2024,
    arXiv:2402.01306, sec. 4.1), which is what TRL's own preparation does; batches are taken in order
    (`train_sampling_strategy: sequential`), so the rows are shuffled once, with the run's seed, beforehand."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        missing = {"prompt_ids", "completion_ids", "label"} - set(dataset.column_names)
        if missing:  # a weitiao bug: every dataset given to this trainer comes from unpaired_dataset()
            raise ValueError(f"{dataset_name} dataset lacks {sorted(missing)}")
        if not self.calculate_KL or "KL_completion_ids" in dataset.column_names:
            return dataset

        def rotate(batch):
            batch["KL_completion_ids"] = [batch["completion_ids"][-1]] + batch["completion_ids"][:-1]
            return batch

        return dataset.map(rotate, batched=True, batch_size=args.per_device_train_batch_size)


def pair_features(feature: dict, model=None) -> dict:
    """What CPOTrainer/ORPOTrainer's `tokenize_row` returns for a decoder, from a row of `pair_dataset`: each answer
    after its prompt, with labels -100 over the prompt."""
    prompt = feature["prompt_ids"]
    out = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
    for which in ("chosen", "rejected"):
        answer = feature[f"{which}_ids"]
        out.update({f"{which}_input_ids": prompt + answer, f"{which}_attention_mask": [1] * (len(prompt) + len(answer)),
                    f"{which}_labels": [-100] * len(prompt) + answer})
    return out


def reference_free_trainers():
    """(ORPO trainer, SimPO trainer, ORPOConfig, CPOConfig) over weitiao's tokenized pairs; imported only when a run
    asks for them (trl.experimental warns on import)."""
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # the warning says the API may change: pinned trl<2
    from trl.experimental.cpo import CPOConfig, CPOTrainer
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    class TokenizedORPOTrainer(ORPOTrainer):
        def tokenize_row(self, feature, model=None):
            return pair_features(feature)

    class TokenizedCPOTrainer(CPOTrainer):
        def tokenize_row(self, feature, model=None):
            return pair_features(feature)

    return TokenizedORPOTrainer, TokenizedCPOTrainer, ORPOConfig, CPOConfig


def unpaired_dataset(pairs: list[EncodedPair], seed: int):
    """KTO's rows: each pair gives a desirable (prompt, chosen) and an undesirable (prompt, rejected) row, in an
    order shuffled by `seed`."""
    from datasets import Dataset

    rows = [(p.prompt_ids, p.chosen_ids, True) for p in pairs] + [(p.prompt_ids, p.rejected_ids, False)
                                                                   for p in pairs]
    random.Random(seed).shuffle(rows)
    return Dataset.from_dict({"prompt_ids": [r[0] for r in rows], "completion_ids": [r[1] for r in rows],
                              "label": [r[2] for r in rows], "length": [len(r[0]) + len(r[1]) for r in rows]})


def pair_dataset(pairs: list[EncodedPair], with_prompt: bool = True):
    """A datasets.Dataset of tokenized pairs. DPO takes the prompt apart; a reward model scores whole sequences,
    so for it the prompt is joined to each answer (`with_prompt=False` gives `chosen_ids`/`rejected_ids` only)."""
    from datasets import Dataset

    # `length` lets the Trainer batch pairs of similar length together (train.group_by_length)
    length = [len(p.prompt_ids) + max(len(p.chosen_ids), len(p.rejected_ids)) for p in pairs]
    if with_prompt:
        return Dataset.from_dict({"prompt_ids": [p.prompt_ids for p in pairs],
                                  "chosen_ids": [p.chosen_ids for p in pairs],
                                  "rejected_ids": [p.rejected_ids for p in pairs], "length": length})
    return Dataset.from_dict({"chosen_ids": [p.prompt_ids + p.chosen_ids for p in pairs],
                              "rejected_ids": [p.prompt_ids + p.rejected_ids for p in pairs], "length": length})
