"""TRL's preference trainers fed with pairs weitiao tokenized itself.

`data.encode.encode_pair` cuts prompt and answers exactly as SFT does (the run's chat template, segment by segment),
so the prompt ids a DPO step sees are the ids `weitiao chat`/`serve` send at inference. TRL's DPOTrainer would
otherwise re-render each pair with the tokenizer's template in one piece and re-tokenize it; its RewardTrainer
already accepts tokenized pairs (`chosen_ids`/`rejected_ids`) as they are.
"""
from __future__ import annotations

from trl import DPOTrainer

from weitiao.data.encode import EncodedPair


class TokenizedDPOTrainer(DPOTrainer):
    """DPOTrainer whose datasets already hold `prompt_ids`, `chosen_ids` and `rejected_ids`."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        missing = {"prompt_ids", "chosen_ids", "rejected_ids"} - set(dataset.column_names)
        if missing:  # a weitiao bug: every dataset given to this trainer comes from pair_dataset()
            raise ValueError(f"{dataset_name} dataset lacks {sorted(missing)}")
        return dataset


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
