"""The Trainer of a causal-LM run (sft): its batches (padded, padding-free, or the cheaper of the two), how its
logits are computed (all positions, label positions, or fused with the loss), and its attention for packed rows."""
from __future__ import annotations

from pathlib import Path

from weitiao.config import Config
from weitiao.console import log
from weitiao.data.dataset import BatchCost, CheaperBatchCollator, PadCollator, PaddingFreeCollator, to_hf_dataset
from weitiao.data.encode import IGNORE_INDEX
from weitiao.memory import guard as memory_guard
from weitiao.methods import method_of, unwrapped
from weitiao.training import distributed
from weitiao.training.arguments import build_training_args
from weitiao.training.segment_attention import training_attention


def logit_fraction(cfg: Config, encoded: list) -> float:
    """The share of a batch's positions that get logits, for the memory estimate: with the fused loss (trained
    tokens only, in any batch) or label-position logits on one-row (padding-free) batches, at most the most
    label-dense example's share; otherwise every position (a padded batch computes the union of its rows' label
    positions, and padding-free may turn out unusable), and when no example is known beforehand (a stream)."""
    fused = memory_guard.fused_loss_planned(cfg)  # logits at trained tokens only, in any batch
    if not (fused or cfg.train.logits_at_labels_only and cfg.train.padding_free) \
            or method_of(cfg.method).virtual_tokens or not encoded:
        return 1.0
    return max(sum(1 for x in e.labels[1:] if x != IGNORE_INDEX) / max(len(e.input_ids), 1) for e in encoded)


def build_trainer(cfg: Config, model, tokenizer, encoded: dict, out_dir: Path, device: str, amp,
                  packed: str | None = None):
    """transformers' Trainer with our collator, validation and best-checkpoint tracking (training.fit adds the
    guards and early stopping). `packed`: the attention padding-free rows will be trained under
    (packed_attention)."""
    from transformers import Trainer

    t = cfg.train
    has_val, train = bool(encoded["val"]), encoded["train"]
    streamed = not isinstance(train, list)  # data.streaming: a datasets.IterableDataset (data.stream)
    kernels = kernel_plan(cfg, model, device)
    log(kernels.why)
    args = build_training_args(cfg, out_dir, device, amp, has_val, None if streamed else len(train),
                               **distributed.training_args(cfg, device), **kernels.training_args())
    callbacks = []
    if method_of(cfg.method).adapter and t.gradient_checkpointing:
        model.enable_input_require_grads()  # frozen embeddings: give checkpointed blocks an input that needs grad
    trainer_class = Trainer
    if distributed.strategy(cfg) == "fsdp":
        from weitiao.training.sharded_checkpoint import ShardedCheckpointTrainer

        trainer_class = ShardedCheckpointTrainer
    if method_of(cfg.method).virtual_tokens:
        # peft's checkpoint of these adapters cannot restore their encoders; see training.prompt_learning
        from weitiao.training.prompt_learning import PromptLearningTrainer, SaveTrainableState

        trainer_class = PromptLearningTrainer
        callbacks.append(SaveTrainableState())
    # Liger's fused linear cross-entropy takes the labels inside the model's forward: no loss or logits of ours
    fused, labels_only = (False, False) if kernels.liger else (fused_loss_usable(cfg, model),
                                                               label_logits_only(cfg, model))
    collator, loss_func = training_collator(cfg, model, tokenizer, fused or labels_only, packed), None
    if fused:
        from weitiao.training.fused_loss import FusedLinearLoss, NoLogitsCollator

        collator, loss_func = NoLogitsCollator(collator), FusedLinearLoss(model, t.fused_loss_chunk)
        log(f"loss: LM head and cross-entropy fused, {t.fused_loss_chunk} positions at a time, at trained tokens "
            "only (train.fused_loss)")
    elif labels_only:
        from weitiao.training.label_logits import LabelPositionsCollator, label_positions_loss

        collator, loss_func = LabelPositionsCollator(collator), label_positions_loss
        log("logits: only at positions that predict a trained token (train.logits_at_labels_only)")
    return trainer_class(
        model=model,
        args=args,
        train_dataset=train if streamed else to_hf_dataset(train),
        eval_dataset=to_hf_dataset(encoded["val"]) if has_val else None,
        data_collator=collator,
        compute_loss_func=loss_func,
        callbacks=callbacks,
    )


def batch_kinds(collator) -> dict:
    """`batches`: padding_free, padded or mixed; with the counts of each kind (validation batches included)."""
    if isinstance(collator, CheaperBatchCollator):
        counts = collator.counts
        kind = "mixed" if all(counts.values()) else "padded" if counts["padded"] else "padding_free"
        return {"batches": kind, "batch_counts": dict(counts)}
    return {"batches": "padding_free" if isinstance(collator, PaddingFreeCollator) else "padded"}


def logits_kind(trainer) -> str:
    """How the run computed its logits: `liger_fused` (Liger's fused linear cross-entropy, train.kernels), `fused`
    (weitiao's chunked head and loss, train.fused_loss), `label_positions` (train.logits_at_labels_only) or
    `all_positions`."""
    loss_func = trainer.compute_loss_func
    if getattr(trainer.args, "use_liger_kernel", False):
        return "liger_fused"
    if loss_func is None:
        return "all_positions"
    return "label_positions" if getattr(loss_func, "__name__", "") == "label_positions_loss" else "fused"


def kernel_plan(cfg: Config, model, device: str):
    """Liger's kernels or transformers' modules (training.kernels.plan) for this run's model and device."""
    from weitiao.training.kernels import plan

    config = unwrapped(model).config
    return plan(cfg.train.kernels, device, getattr(config, "model_type", ""), method_of(cfg.method).virtual_tokens)


def label_logits_only(cfg: Config, model) -> bool:
    """Whether the LM head runs at label positions only (train.logits_at_labels_only, where the model allows)."""
    from weitiao.training.label_logits import supports_logits_to_keep

    return (cfg.train.logits_at_labels_only and not method_of(cfg.method).virtual_tokens
            and supports_logits_to_keep(model))


def fused_loss_usable(cfg: Config, model) -> bool:
    """Whether the chunked head-and-loss pass runs (train.fused_loss): not with virtual tokens, not where the head's
    weight is sharded outside the forward pass (FSDP, ZeRO-3), and only where the model passes `usable`'s check."""
    from weitiao.training import fused_loss

    return memory_guard.fused_loss_planned(cfg) and fused_loss.usable(model)


def training_collator(cfg: Config, model, tokenizer, labels_only: bool, packed: str | None = None):
    """Padding-free batches where the config allows them, the loaded model keeps packed examples apart (checked
    under the attention training will use), and a batch is cheaper packed than padded (`batch_cost`); padded
    batches otherwise."""
    from weitiao.training.padding_free import keeps_examples_apart

    if not cfg.train.padding_free or method_of(cfg.method).virtual_tokens:
        return PadCollator(tokenizer.pad_token_id)
    cost = batch_cost(model, labels_only, packed, cfg.train.padding_free_multiple)
    collator = CheaperBatchCollator(tokenizer.pad_token_id, cost)
    with training_attention(unwrapped(model), packed):  # the check runs on the packed rows training will get
        apart = keeps_examples_apart(model, len(tokenizer), collator=collator.packed)
    if apart:
        attention = ("one attention call per example (train.packed_attention: segments)" if packed == "segments"
                     else "FlexAttention under each row's document mask (train.packed_attention: flex)"
                     if packed == "flex" else "flash-attention's variable-length kernel" if packed == "flash"
                     else "variable-length attention" if cost.varlen
                     else "a packed row attends over its whole length")
        log(f"batches: padding-free where cheaper than padded, batch by batch (train.padding_free; {attention})")
        return collator
    log(f"batches: padded: {type(model).__name__} mixes examples packed into one row, so padding-free batches "
        "are not used")
    return PadCollator(tokenizer.pad_token_id)


# Attention's cost per query-key pair it scores, in units of the theoretical 4 L d / (2 N) (its FLOPs against a
# token's through the linear layers; L layers, d attention width, N linear weights). Fitted on this project's
# 2-core AVX2 CPU, SmolLM2-135M LoRA, fp32, forward + backward of 8 rows of 48-384 tokens (about 6.9 ms a token):
# a packed row under its block-diagonal mask cost 1.3 units a pair (every pair of the T x T matrix computed), a
# padded row under a causal kernel 1.1 units per pair it scores. Packed then won only where padding was wasted.
PAIR_PACKED, PAIR_PADDED = 1.3, 1.1


def batch_cost(model, labels_only: bool, packed: str | None = None, packed_multiple: int = 1) -> BatchCost:
    """The cost model of `CheaperBatchCollator` for this model, from its shape (see data.dataset.BatchCost). A
    model whose config does not name its layers and heads the transformers way gets attention at no cost, so
    every batch is packed (what train.padding_free did before the cost model). `packed` `segments` or `flex`:
    packed rows are trained under an attention that scores each example's own pairs only."""
    config = model.config
    try:
        heads = config.num_attention_heads
        width = heads * (getattr(config, "head_dim", None) or config.hidden_size // heads)
        layers = config.num_hidden_layers
        embed, head = model.get_input_embeddings().weight, model.get_output_embeddings()
    except (AttributeError, NotImplementedError, TypeError):
        return BatchCost(pair_packed=0.0, pair_padded=0.0, head=0.0, labels_only=labels_only,
                         packed_multiple=packed_multiple)
    n_head = head.weight.numel() if head is not None else 0
    tied = head is not None and head.weight is embed
    n_linear = max(1, sum(p.numel() for p in model.parameters()) - embed.numel() - (0 if tied else n_head))
    unit = 4 * layers * width / (2 * n_linear)
    varlen = packed in ("segments", "flex", "flash") or getattr(config, "_attn_implementation", None) in (
        "flash_attention_2", "flash_attention_3")
    return BatchCost(pair_packed=PAIR_PACKED * unit, pair_padded=PAIR_PADDED * unit, head=n_head / n_linear,
                     labels_only=labels_only, varlen=varlen, packed_multiple=packed_multiple)


def packed_attention(cfg: Config, model, device: str, flash_installed: bool | None = None) -> str | None:
    """How padding-free rows keep their examples apart while training (train.packed_attention): `segments` (one
    sdpa call per example, training.segment_attention), `flex` (FlexAttention under a document mask,
    training.flex_attention), `flash` (flash-attention's variable-length kernel through transformers'
    flash_attention_2, which reads the boundaries itself), or None: the model's own attention (a block-diagonal
    mask under sdpa). `auto`: segments on a CPU; on a GPU flash where flash-attn is installed, else flex.
    `flash_installed` defaults to whether flash_attn can be found here."""
    import importlib.util

    from weitiao.training import flex_attention, segment_attention

    choice, inner = cfg.train.packed_attention, unwrapped(model)
    if choice == "mask" or not cfg.train.padding_free or method_of(cfg.method).virtual_tokens:
        return None
    if not segment_attention.usable(inner):
        if choice in ("segments", "flex", "flash"):
            log(f"train.packed_attention: {choice} needs the model on sdpa attention through transformers' "
                f"AttentionInterface; {type(inner).__name__} uses "
                f"{getattr(inner.config, '_attn_implementation', None)!r}, so packed rows use its own")
        return None
    if flash_installed is None:
        flash_installed = importlib.util.find_spec("flash_attn") is not None
    if choice == "auto":
        choice = "segments" if device == "cpu" else "flash" if flash_installed else "flex"
    if choice == "flash" and not (device == "cuda" and flash_installed):
        log("train.packed_attention: flash needs a CUDA GPU and `pip install flash-attn`; packed rows use "
            + ("one attention call per example" if device == "cpu" else "FlexAttention"))
        choice = "segments" if device == "cpu" else "flex"
    if choice == "flex" and not flex_attention.trains_on(device):
        log(f"train.packed_attention: flex cannot train on {device} with this torch (FlexAttention needs torch 2.5, "
            "and has no backward on a CPU); packed rows use one attention call per example")
        return "segments"
    return choice
