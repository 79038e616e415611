"""The run configuration: one YAML file, one small typed dataclass per concern.

Every field carries its documentation in `metadata["help"]`; that text is the single source for
`weitiao config-reference` and the docs' config reference (docs/reference/config.md). `load_config` validates everything once, at the
boundary, and raises a single `ConfigError` that lists every problem with its field path.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from weitiao.data.formats import CONVERTERS, PREFERENCE_FORMATS
from weitiao.errors import ConfigError
from weitiao.methods import METHODS, method_config_type
from weitiao.settings import doc


def __getattr__(name: str):
    if name == "MethodConfig":  # the `method` section, built from the registered methods (methods/__init__.py)
        return method_config_type()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class ModelConfig:
    name_or_path: str = doc(
        "The pretrained model: a short name (`smollm2-135m-instruct`), a local HF folder, a `.gguf` file "
        "(dequantized once and cached as safetensors), or a hub id (`owner/name`: downloaded into the Hugging Face "
        "cache, or read from it with --offline; `modelscope:owner/name` from ModelScope). "
        "For `task: dpo`, `kto`, `orpo`, `simpo` and `grpo`, also a finished weitiao run folder: training continues "
        "from its model or LoRA adapter, with its chat template (and that starting point is DPO's and KTO's frozen "
        "reference).",
        "smollm2-135m-instruct",
    )
    revision: Optional[str] = doc(
        "For a hub id: the branch, tag or commit to download (empty: the default branch). The commit it resolves "
        "to is recorded in the run folder (sources.json).", None)
    chat_template: str = doc(
        "`auto` uses the tokenizer's own chat template; or a built-in template by name "
        "(`chatml`, `llama3`, `qwen`, `glm4`, `chatglm3`) for models without one.",
        "auto",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = doc(
                "Weight dtype. `auto`: bfloat16 on a GPU that supports it. On a CPU, float32, except for `task: sft` with "
        "lora under bf16 autocast (train.precision auto on a CPU with AMX, or bf16): its base weights "
        "are never updated, so they are kept in bfloat16 rather than cast to it in every step. Measured effect: "
        "docs/guides/training.md.", "auto"
    )
    device: Literal["auto", "cpu", "cuda"] = doc("`auto`: CUDA when available, else CPU.", "auto")
    trust_remote_code: bool = doc("Run code shipped with the model (off unless you trust the source).", False)
    convert_pickle: bool = doc(
        "Allow a model folder that has only pickle weights (.bin): convert it once to safetensors in the cache, "
        "loading with torch.load(weights_only=True). Off: such folders are refused.",
        False,
    )
    attn_implementation: Optional[str] = doc(
        "Attention kernel passed to transformers (`sdpa`, `eager`, ...); empty for the library default.", None
    )

    def problems(self) -> list[str]:
        from weitiao.data.templates import BUILTIN_TEMPLATES

        if self.chat_template == "auto" or self.chat_template in BUILTIN_TEMPLATES:
            return []
        name = self.chat_template
        return [f"model.chat_template: unknown template {name!r}{did_you_mean(name, BUILTIN_TEMPLATES)}; "
                f"known: auto, {', '.join(BUILTIN_TEMPLATES)}"]


@dataclass
class DataConfig:
    format: Literal["alpaca", "sharegpt", "messages", "chatglm", "text", "labelled", "preference",
                    "sharegpt_preference"] = doc(
        "Row format: `alpaca` (instruction/input/output[/system/history]), `sharegpt` (conversations of from/value), "
        "`messages` (OpenAI role/content), `chatglm` (prompt/response/history), `text` (plain text, loss on all), "
        "`labelled` (text/label, for `task: classify`), `preference` (prompt/chosen/rejected[/system]; the prompt a "
        "string or a list of role/content turns, each answer a string or one assistant turn, as TRL takes them), "
        "`sharegpt_preference` (conversations of from/value, then chosen/rejected turns, as LLaMA-Factory takes "
        "them). Preference rows are for `task: dpo`, `kto` and `reward`; `task: sft` on them trains the chosen "
        "answers.",
        "messages",
    )
    labels: list[str] = doc(
        "Class names for `task: classify`, in the order of the head's outputs; empty: the sorted names found in the "
        "training data. A val/test label outside this list is an error.", default_factory=list)
    train: list[str] = doc(
        "Training data: one or more .json/.jsonl/.csv/.parquet files or folders (relative to the config file), or "
        "hub datasets as `OWNER/NAME[/CONFIG][@REVISION][:SPLIT]` (split default: train).",
        default_factory=list,
    )
    val: list[str] = doc("Validation files or hub datasets (split default: validation); empty to split `val_ratio` "
                         "off the training data.", default_factory=list)
    test: list[str] = doc("Test files or hub datasets (split default: test); empty to split `test_ratio` off the "
                          "training data.", default_factory=list)
    val_ratio: float = doc("Fraction of the training rows held out for validation when `val` is empty.", 0.0)
    test_ratio: float = doc("Fraction of the training rows held out for testing when `test` is empty.", 0.0)
    split_seed: int = doc("Seed of the train/val/test split.", 42)
    columns: dict[str, str] = doc(
        "Map a format's field name to the column name in your files, e.g. `{output: answer}`.", default_factory=dict
    )
    system: Optional[str] = doc("System prompt added to every conversation that has none.", None)
    max_length: int = doc("Maximum tokens per example after the chat template is applied.", 1024)
    overlong: Literal["truncate", "drop"] = doc(
        "What to do with longer examples: `truncate` (cut the end) or `drop` (skip the row). Counts are reported.",
        "truncate",
    )
    loss_on: Literal["assistant", "last_assistant", "all"] = doc(
        "Tokens that carry loss: every assistant turn (default), only the last one, or all tokens.", "assistant"
    )
    drop_duplicates: bool = doc("Drop exact duplicate rows from the training data (reported).", True)
    skip_bad_rows: bool = doc(
        "Train on the good rows when some rows are bad (also `--skip-bad-rows`); the skipped rows and reasons are "
        "written to `skipped_rows.jsonl` in the output folder. Off: any bad row stops the run before training.",
        False,
    )
    streaming: bool = doc(
        "Read the training data as training consumes it instead of all at once, for data larger than memory: local "
        "files row by row, hub datasets straight from the hub (nothing downloaded beforehand). Each row is checked "
        "and tokenized when it is reached: a bad row stops the run there, naming its file and line (or is skipped "
        "with `skip_bad_rows`). Needs `train.max_steps`, and `val`/`test` as their own files or splits (read at "
        "once); the stream is not de-duplicated or checked for leakage. Tasks sft and pretrain.", False)
    shuffle_buffer: int = doc(
        "With `streaming`: rows are shuffled within a window of this many (datasets' buffer shuffle); 1 keeps the "
        "files' order.", 1000)
    near_duplicate_threshold: float = doc(
        "Estimated Jaccard similarity (MinHash over character 5-grams) at which two rows count as near-duplicates "
        "(inside train) or as leakage (between train and val/test).",
        0.8,
    )

    def problems(self) -> list[str]:
        p = [] if self.train else ["data.train: no training data given"]
        p += [f"data.{name}: must be in [0, 1), got {getattr(self, name)}" for name in ("val_ratio", "test_ratio")
              if not 0.0 <= getattr(self, name) < 1.0]
        if self.val_ratio + self.test_ratio >= 1.0:
            p.append("data.val_ratio + data.test_ratio: must leave rows for training")
        if self.streaming and (self.val_ratio or self.test_ratio):
            p.append("data.streaming: a stream cannot be split by val_ratio/test_ratio; give data.val and data.test as "
                     "their own files or splits")
        if self.shuffle_buffer < 1:
            p.append(f"data.shuffle_buffer: must be at least 1, got {self.shuffle_buffer}")
        if not 0.0 < self.near_duplicate_threshold <= 1.0:
            p.append(f"data.near_duplicate_threshold: must be in (0, 1], got {self.near_duplicate_threshold}")
        if self.max_length < 8:
            p.append(f"data.max_length: must be at least 8, got {self.max_length}")
        return p


@dataclass
class TrainConfig:
    epochs: float = doc("Passes over the training data (ignored when `max_steps` > 0).", 1.0)
    max_steps: int = doc("Total optimizer steps; 0 to use `epochs`.", 0)
    batch_size: int = doc("Examples per device per step.", 8)
    grad_accum: int = doc("Gradient accumulation steps (effective batch = batch_size x grad_accum x devices).", 1)
    learning_rate: float = doc("Peak learning rate.", 2e-4)
    lr_scheduler: str = doc("Learning-rate schedule (`linear`, `cosine`, `constant_with_warmup`, ...).", "cosine")
    warmup_ratio: float = doc("Fraction of steps of linear warm-up.", 0.05)
    weight_decay: float = doc("AdamW weight decay.", 0.0)
    max_grad_norm: float = doc("Gradient clipping norm.", 1.0)
    optim: str = doc("Optimizer name as transformers knows it (`adamw_torch`, `adamw_torch_fused`, `sgd`, ...). "
                     "`auto`: `adamw_torch_fused` on a CUDA GPU (the whole update in a few kernels instead of "
                     "several per tensor), `adamw_torch` elsewhere.", "auto")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = doc(
                "Mixed precision for training and evaluation. `auto`: bf16 autocast where bf16 is faster than fp32 (a "
        "GPU that supports it, a CPU with AMX), else fp32. On a CPU without AMX, bf16 is emulated or "
        "unaccelerated and slower than fp32.",
        "auto",
    )
    gradient_checkpointing: bool = doc(        "Recompute activations in backward: less memory, more compute.", False)
    group_by_length: bool = doc(
                "Batch examples of similar length together to waste less compute on padding (transformers' "
        "LengthGroupedSampler: each group of up to 50 batches in descending length). Off by default: it changes "
        "which examples the model sees when, and so the result, and padding-free batches waste no compute on "
        "padding anyway. Worth it for padded batches of very uneven lengths over many epochs.", False)
    padding_free: bool = doc(
        "`task: sft`: concatenate a batch's examples into one row, without padding, with position ids restarting "
        "at each example and no attention across examples, wherever that is cheaper than padding the batch (a cost "
        "model per batch: packing saves the padding but, without a variable-length attention kernel such as "
        "flash-attention's or weitiao's segment attention (train.packed_attention), scores attention over the whole "
        "row, so long examples are cheaper padded); the loss is "
        "the padded batch's within float noise. Used only after a check on the loaded model (two examples packed "
        "and alone must give the same logits); prefix/prompt/P-tuning, whose virtual tokens go in front of each "
        "row, always use padded batches.", True)
    packed_attention: Literal["auto", "segments", "flex", "flash", "mask"] = doc(
        "`task: sft`, padding-free rows: how attention keeps a row's examples apart. `segments`: one causal "
        "attention call per example, so an example of t tokens costs t^2 / 2 query-key pairs (weitiao's own "
        "function, registered with transformers, used while training and only for packed rows). `flex`: one "
        "FlexAttention call per layer under the row's document mask, compiled once, which skips the blocks of the "
        "T x T scores that cross examples (torch 2.5 or later; no backward on a CPU). `flash`: flash-attention's "
        "variable-length kernel (transformers' flash_attention_2; a CUDA GPU and `pip install flash-attn`). "
        "`mask`: transformers' sdpa over the whole row of T tokens under a block-diagonal mask, T^2 pairs. "
        "`auto`: `segments` on a CPU; on a GPU `flash` where flash-attn is installed, else `flex`; for a model on "
        "sdpa attention. The loss is the same within float noise.", "auto")
    padding_free_multiple: int = doc(
                "`task: sft`, padding-free rows: round each row's length up to a multiple of this with a filler example "
        "(pad tokens, no labels, attending only to itself), so the loss and gradients are unchanged. Rows of a "
        "few distinct lengths let the CPU allocator and oneDNN reuse their buffers, where every new length leaves "
        "some behind. 1 turns it off.", 64)
    compile: bool = doc(
                "`task: sft`: torch.compile each decoder layer (regional compilation, `dynamic=True`): inductor fuses the "
        "layer's elementwise operations (norms, rotary embeddings, activations, LoRA's scale and add) into fewer "
        "kernels. The first steps pay for the compilation (needs a C++ compiler on a CPU), so it pays only in "
        "long runs. The loss is the eager one within float noise. Not with FSDP, DeepSpeed or "
        "prefix/prompt/P-tuning.", False)
    logits_at_labels_only: bool = doc(
        "`task: sft`: run the LM head and the loss only at positions that predict a trained token (transformers' "
        "`logits_to_keep`), not over the prompt and padding: less compute and far smaller logits, the same loss "
        "and gradients. Used where the model takes `logits_to_keep`; not with prefix/prompt/P-tuning.", True)
    kernels: Literal["auto", "liger", "none"] = doc(
        "`task: sft`: Liger Kernel's Triton kernels (RMSNorm, SwiGLU, RoPE, and the LM head fused with the "
        "cross-entropy) instead of transformers' modules, through transformers' `use_liger_kernel`. They run on a "
        "CUDA GPU with `pip install 'weitiao[gpu]'`, for the model families Liger covers. `auto`: where they run, "
        "else transformers' modules with weitiao's own fused loss (train.fused_loss); `liger`: an error where "
        "they cannot run; `none`: never. metrics.json records which ran.", "auto")
    fused_loss: bool = doc(
        "`task: sft`: compute the LM head and the cross-entropy together, a chunk of trained positions at a time, "
        "with their gradients in the same pass (as Liger Kernel's fused linear cross-entropy): the (tokens x "
        "vocabulary) logits never exist whole, the loss and gradients are the usual ones within float noise. Used "
        "where the model's logits are its head applied to its decoder's output (checked on the loaded model); not "
        "with prefix/prompt/P-tuning, FSDP or ZeRO-3 (they fall back to train.logits_at_labels_only).", True)
    fused_loss_chunk: int = doc(
        "train.fused_loss: positions per chunk; the loss holds at most chunk x vocabulary fp32 logits.", 1024)
    seed: int = doc("Seed for weights of new modules, dropout and data order.", 42)
    report_to: list[Literal["tensorboard", "wandb", "mlflow", "trackio", "swanlab", "none"]] = doc(
        "Experiment trackers that follow the run, through the Trainer's own integrations: `tensorboard` writes "
        "event files to the run folder's `logs/` (`tensorboard --logdir RUN/logs`); `wandb`, `mlflow`, `trackio` "
        "and `swanlab` log where their own settings say. The training curve, validation, and at the end the "
        "base-vs-tuned test metrics and the forgetting check. `none`: no tracker.",
        default_factory=lambda: ["tensorboard"])
    logging_steps: int = doc("Log the training loss every N steps.", 5)
    eval_steps: int = doc("Evaluate on the validation split every N steps (0: once per epoch).", 0)
    save_total_limit: int = doc("Checkpoints kept on disk (the best one is always kept).", 2)
    early_stopping_patience: int = doc(
        "Stop after N evaluations without improvement of validation loss (0: off).", 0
    )
    load_best_at_end: bool = doc("Finish with the checkpoint of lowest validation loss.", True)
    memory_check: bool = doc(
        "Before loading the model, estimate peak memory and stop (with `weitiao plan`'s suggestion) when it "
        "exceeds the memory available.", True)
    class_weights: Literal["none", "balanced"] = doc(
        "`task: classify` only: weight each class's loss by n_rows / (n_classes x n_rows_of_class) (`balanced`), "
        "so rare classes count as much as frequent ones.", "none")
    max_nonfinite_steps: int = doc(
        "Steps with a NaN/inf gradient are skipped (no weight changes); after this many in a row, training stops "
        "with the last good checkpoint kept.",
        5,
    )

    def problems(self) -> list[str]:
        p = [f"train.{name}: must be at least 1, got {getattr(self, name)}"
             for name in ("batch_size", "grad_accum", "logging_steps", "max_nonfinite_steps", "fused_loss_chunk",
                          "padding_free_multiple") if getattr(self, name) < 1]
        p += [f"train.{name}: must not be negative, got {getattr(self, name)}"
              for name in ("max_steps", "eval_steps", "early_stopping_patience", "save_total_limit")
              if getattr(self, name) < 0]
        if self.max_steps == 0 and self.epochs <= 0:
            p.append("train.epochs: must be positive when train.max_steps is 0")
        if self.learning_rate <= 0:
            p.append(f"train.learning_rate: must be positive, got {self.learning_rate}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            p.append(f"train.warmup_ratio: must be in [0, 1), got {self.warmup_ratio}")
        from transformers.trainer_utils import SchedulerType  # the Trainer's own names, checked here, not later
        from transformers.training_args import OptimizerNames

        schedulers = [x.value for x in SchedulerType]
        if self.lr_scheduler not in schedulers:
            p.append(f"train.lr_scheduler: unknown schedule {self.lr_scheduler!r}"
                     f"{did_you_mean(self.lr_scheduler, schedulers)}; known: {', '.join(schedulers)}")
        optimizers = [x.value for x in OptimizerNames]
        if self.optim not in optimizers + ["auto"]:
            p.append(f"train.optim: unknown optimizer {self.optim!r}{did_you_mean(self.optim, optimizers)}")
        return p + tracker_problems(self.report_to)


# train.report_to name -> (the module its Trainer integration imports, what to install)
TRACKERS = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"),
            "mlflow": ("mlflow", "mlflow"), "trackio": ("trackio", "trackio"), "swanlab": ("swanlab", "swanlab")}


def tracker_problems(names: list[str]) -> list[str]:
    """A tracker named but not installed is refused now, not when training starts."""
    import importlib.util

    if "none" in names and len(names) > 1:
        return [f"train.report_to: `none` with other trackers ({', '.join(n for n in names if n != 'none')})"]
    return [f"train.report_to: {name} is not installed (pip install {TRACKERS[name][1]}); or leave it out"
            for name in names if name in TRACKERS and importlib.util.find_spec(TRACKERS[name][0]) is None]


@dataclass
class GenerationConfig:
    max_new_tokens: int = doc("Maximum tokens generated per test row.", 128)
    batch_size: int = doc("Rows generated together (left-padded).", 16)
    do_sample: bool = doc("Sample instead of greedy decoding (greedy keeps base/tuned comparable).", False)
    temperature: float = doc("Sampling temperature (only with `do_sample`).", 0.7)
    top_p: float = doc("Nucleus sampling (only with `do_sample`).", 0.9)
    repetition_penalty: float = doc(
        "Divides the logit of every token already in the prompt or the answer by this (multiplies a negative one), "
        "greedy or sampled (Keskar et al. 2019, arXiv:1909.05858; transformers' `repetition_penalty`). 1: off. "
        "The same setting decodes every model compared.", 1.0)

    def problems(self) -> list[str]:
        p = [] if self.max_new_tokens >= 1 else ["eval.generation.max_new_tokens: must be at least 1"]
        if self.batch_size < 1:
            p.append("eval.generation.batch_size: must be at least 1")
        if not self.repetition_penalty > 0:
            p.append(f"eval.generation.repetition_penalty: must be above 0 (1: off), got {self.repetition_penalty}")
        return p


@dataclass
class EvalConfig:
    metrics: list[str] = doc(
        "Generation metrics on the test split: `exact_match`, `exact_match_loose` (ignoring case, punctuation and "
        "spacing), `count_list` (the demo task's format and count), `count_close` (partial credit for the count: "
        "1 - |items - N| / N, format aside), `list_correct` (the demo task as a reader checks "
        "it: the count, and distinct items that belong to the category), `rouge-1`, `rouge-2`, `rouge-l`, `bleu-4` (jieba word "
        "segmentation, as ChatGLM and LLaMA-Factory score; Chinese-aware), `chrf`, `json_valid`, `json_fields`, "
        "or `module:function` for your own (prediction, reference) -> float. Empty: loss only.",
        default_factory=lambda: ["exact_match"],
    )
    reward_model: Optional[str] = doc(
        "A finished `task: reward` run folder: each generated test answer is also scored by that reward model, "
        "and its mean is reported as the metric `reward` (for base and tuned alike). Empty: no reward scoring.",
        None)
    compare_base: bool = doc("Also score the base model on the same rows with the same decoding.", True)
    forgetting: bool = doc(
        "Also measure the loss of the base and the tuned model on a small general-text set that ships with weitiao "
        "(32 English and Chinese paragraphs no run trains on): a rise after tuning is forgetting. Causal LMs only.",
        True)
    rephrase: bool = doc(
        "`task: sft`: also ask the tuned model every test question in `rephrase.k` other phrasings (the `rephrase` "
        "section says where they come from; they are made before training) and write `rephrased.json`, shown in "
        "the report: the same as `weitiao eval RUN --rephrase` after training.", False)
    report: bool = doc(
        "After training, write `report/report.html` into the run folder: base vs tuned with bootstrap intervals, "
        "loss curves, improved/regressed rows and the forgetting check (the same as `weitiao compare RUN`).", True)
    max_samples: int = doc("Score at most N test rows (0: all).", 0)
    generation: GenerationConfig = doc("Decoding settings, the same for every model compared.",
                                       default_factory=GenerationConfig)

    def problems(self) -> list[str]:
        """The decoding settings, and the reward model's run folder (eval.reward_model)."""
        p = self.generation.problems()
        if self.reward_model:
            p += reward_run_problems(self.reward_model, "eval.reward_model")
        return p


def reward_run_problems(path: str, where: str) -> list[str]:
    """Why `path` is not a finished `task: reward` run folder (empty: it is one)."""
    run_dir = Path(path).expanduser()
    saved = run_dir / "config.yaml"
    if not (run_dir / "run.json").is_file() or not saved.is_file():
        return [f"{where}: {run_dir} is not a weitiao run folder"]
    if (yaml.safe_load(saved.read_text(encoding="utf-8")) or {}).get("task") != "reward":
        return [f"{where}: {run_dir} is not a `task: reward` run"]
    return []


REPHRASE_PROMPT = ("Rewrite the following request in different words. Keep its meaning and every number. Reply "
                   "with the rewritten request only.\n\nRequest: {question}")
# the default prompt for a Chinese question: a model answers in the language it is asked in
REPHRASE_PROMPT_ZH = "用不同的措辞改写下面的请求。保持原意，保留每一个数字、名称和字段。只回复改写后的请求。\n\n请求：{question}"


@dataclass
class RephraseConfig:
    templates: Optional[str] = doc(
        "A YAML file of rephrasing rules: a list of `{match: REGEX, rephrasings: [TEXT, ...]}`, where each TEXT "
        "reuses the regex's named groups as `{name}`. A question takes the rephrasings of every rule whose regex "
        "matches it whole. Relative paths are read from the config's folder.", None)
    model: Optional[str] = doc(
        "Instead of rules, a chat model writes the rephrasings: `base` (the config's `model.name_or_path`), a "
        "local model folder, a bundled model name, or the base URL of an OpenAI-compatible endpoint "
        "(`http://127.0.0.1:8000/v1`: vLLM, Ollama, llama.cpp's server, `weitiao serve`). Each candidate is "
        "checked (it must ask the same thing: every number, name, quoted term, field, format, the task and the "
        "topic kept, and every answer value the question states) and the accepted ones are cached after every "
        "batch.", None)
    endpoint_model: Optional[str] = doc("With `model` an endpoint URL: the served model to ask (empty: the first "
                                        "one the endpoint's /models lists).", None)
    api_key_env: Optional[str] = doc("With `model` an endpoint URL: the environment variable holding its API key "
                                     "(sent as a Bearer token; unset or empty variable: no key).", "OPENAI_API_KEY")
    target: Literal["instruction", "whole_turn"] = doc(
        "What is reworded in the last user turn. `instruction`: the instruction only, never the data it applies "
        "to: of a turn with paragraphs separated by a blank line (an alpaca row's instruction and input, or a "
        "question with pasted context), the first paragraph, or the last when it is a question and the first is "
        "not; a one-paragraph turn whole. `whole_turn`: the whole turn, data included.", "instruction")
    k: int = doc("Rephrasings per question.", 2)
    batch_size: int = doc("Rows the rephrasing model generates at once (each question of a batch asked `k` "
                          "times); the texts are cut into batches of `batch_size // k` questions, and the cache is "
                          "written after each batch.", 16)
    prompt: str = doc("What the rephrasing model is asked; `{question}` is replaced by the question. Left as the "
                      "default, a Chinese question is asked with the default's Chinese version.",
                      REPHRASE_PROMPT)
    cache: Optional[str] = doc("JSONL cache of model-written rephrasings (empty: `rephrase.jsonl` in weitiao's "
                               "cache folder, `~/.cache/weitiao` or `$WEITIAO_CACHE`).", None)

    def problems(self) -> list[str]:
        p = ["rephrase: set templates or model, not both"] if self.templates and self.model else []
        if self.k < 1:
            p.append(f"rephrase.k: must be at least 1, got {self.k}")
        if self.batch_size < 1:
            p.append(f"rephrase.batch_size: must be at least 1, got {self.batch_size}")
        if "{question}" not in self.prompt:
            p.append("rephrase.prompt: must contain {question}, where the question goes")
        return p


KTO_LOSS_TYPES = ("kto", "apo_zero_unpaired")  # TRL 1.16's KTOTrainer
DPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                  "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")  # TRL 1.16's DPOTrainer


@dataclass
class PreferenceConfig:
    beta: float = doc(
        "How far the policy may move from the reference: the DPO loss is -log sigmoid(beta x (chosen log-ratio - "
        "rejected log-ratio)) (Rafailov et al. 2023, arXiv:2305.18290); for `ipo` it is the regulariser tau. "
        "`task: orpo`: the weight lambda of the odds-ratio term added to the chosen answer's NLL (Hong et al. 2024, "
        "arXiv:2403.07691). `task: simpo`: the scale of the reward beta / |y| x log pi(y|x) (Meng et al. 2024, "
        "arXiv:2405.14734).", 0.1)
    loss_type: list[str] = doc(
        "Empty: `sigmoid` for `task: dpo`, `kto` for `task: kto`. `task: kto` takes one of `kto`, "
        "`apo_zero_unpaired`. `task: dpo` takes one or more, as TRL names them: `sigmoid` (DPO), `ipo` (arXiv:2310.12036), `hinge` (SLiC), "
        "`robust`, `exo_pair`, `nca_pair`, `bco_pair`, `sppo_hard`, `aot`, `aot_unpaired`, `apo_zero`, `apo_down`, "
        "`discopop`, `sigmoid_norm`, `sft` (NLL on the chosen answer). Several are summed with `loss_weights` "
        "(e.g. `[sigmoid, sft]` is RPO).", default_factory=list)
    loss_weights: list[float] = doc("Weight of each loss in `loss_type`; empty: 1 each.", default_factory=list)
    desirable_weight: float = doc(
        "`task: kto`: weight of the desirable (chosen) rows' loss; KTO's paper advises keeping desirable_weight x "
        "n_desirable / (undesirable_weight x n_undesirable) in [1, 4/3].", 1.0)
    undesirable_weight: float = doc("`task: kto`: weight of the undesirable (rejected) rows' loss.", 1.0)
    label_smoothing: float = doc(
        "Probability that a pair's preference is flipped (`robust`) or EXO's epsilon; 0 for plain DPO.", 0.0)
    simpo_gamma: float = doc(
        "`task: simpo`: the target margin gamma the chosen answer's reward must clear over the rejected one's.", 0.5)
    center_rewards: float = doc(
        "`task: reward` only: adds this coefficient x mean(reward^2) to the loss -log sigmoid(r_chosen - "
        "r_rejected) (TRL's `center_rewards_coefficient`, Eisenstein et al. 2023, arXiv:2312.09244), which keeps "
        "rewards near zero so scores of different prompts compare; 0: off.", 0.0)

    def problems(self, task: str) -> list[str]:
        p = [] if self.beta > 0 else [f"preference.beta: must be positive, got {self.beta}"]
        if not 0.0 <= self.label_smoothing < 0.5:
            p.append(f"preference.label_smoothing: must be in [0, 0.5), got {self.label_smoothing}")
        if self.center_rewards < 0:
            p.append(f"preference.center_rewards: must not be negative, got {self.center_rewards}")
        known = KTO_LOSS_TYPES if task == "kto" else DPO_LOSS_TYPES
        p += [f"preference.loss_type[{i}]: unknown {task} loss {name!r}{did_you_mean(name, known)}; known: "
              f"{', '.join(known)}" for i, name in enumerate(self.loss_type) if name not in known]
        if task == "kto" and len(self.loss_type) > 1:
            p.append("preference.loss_type: task kto takes one loss")
        if task in ("orpo", "simpo") and self.loss_type:
            p.append(f"preference.loss_type: task {task} has its own loss; leave loss_type empty")
        if self.simpo_gamma < 0:
            p.append(f"preference.simpo_gamma: must not be negative, got {self.simpo_gamma}")
        if min(self.desirable_weight, self.undesirable_weight) <= 0:
            p.append("preference.desirable_weight, undesirable_weight: must be positive")
        if self.loss_weights and len(self.loss_weights) != len(self.loss_type):
            p.append(f"preference.loss_weights: {len(self.loss_weights)} weights for {len(self.loss_type)} losses")
        return p


@dataclass
class GrpoConfig:
    rewards: list[str] = doc(
        "`task: grpo`: what scores each sampled answer, against the row's reference answer; several are summed "
        "with `reward_weights`. Each is a metric name from `eval.metrics` (`count_list`, `list_correct`, "
        "`count_close`, `exact_match`, `json_fields`, ...), `module:function` (your own (completion, reference) -> "
        "number, importable from the working directory), or a finished `task: reward` run folder (its reward "
        "model scores the conversation with the answer).", default_factory=list)
    reward_weights: list[float] = doc("Weight of each reward in `rewards`; empty: 1 each.", default_factory=list)
    num_generations: int = doc(
        "Answers sampled per prompt. GRPO (Shao et al. 2024, arXiv:2402.03300) scores each answer against the "
        "mean reward of its group, so no value model is trained; `train.batch_size` counts answers, and must be "
        "a multiple of this.", 4)
    max_completion_length: int = doc("Longest sampled answer, in tokens.", 128)
    temperature: float = doc("Sampling temperature of the answers trained on.", 1.0)
    beta: float = doc(
        "Weight of the KL penalty towards the starting model. 0 (the default, as in DAPO, arXiv:2503.14476, and "
        "Dr. GRPO, arXiv:2503.20783) keeps no reference; above 0 a LoRA run uses the model with its adapter "
        "switched off as the reference, a full or freeze run a second copy of the weights.", 0.0)
    loss_type: Literal["dapo", "grpo", "dr_grpo", "bnpo"] = doc(
        "How token losses are averaged, as TRL names them: `dapo` over the tokens of the whole batch; `grpo` per "
        "answer first (favours short right answers); `dr_grpo` over a constant; `bnpo` over the local batch.",
        "dapo")
    scale_rewards: Literal["group", "batch", "none"] = doc(
        "What the advantage (reward minus its group's mean) is divided by: the group's standard deviation, the "
        "batch's, or nothing (Dr. GRPO: the group scale favours prompts that are too easy or too hard).", "group")

    def problems(self, cfg) -> list[str]:
        from weitiao.evaluation.metrics import METRICS, user_metric  # local import: metrics pull in nothing heavy

        p = [] if self.rewards else ["grpo.rewards: name at least one reward (a metric, module:function, or a "
                                     "task: reward run folder)"]
        for i, name in enumerate(self.rewards):
            where = f"grpo.rewards[{i}]"
            if name in METRICS:
                continue
            if ":" in name and not Path(name).expanduser().exists():
                try:
                    user_metric(name)
                except ValueError as err:
                    p.append(f"{where}: reward function {name!r}: {err}")
            elif Path(name).expanduser().is_dir():
                p += reward_run_problems(name, where)
            else:
                p.append(f"{where}: {name!r} is no metric{did_you_mean(name, METRICS)}, module:function or run "
                         f"folder; metrics: {', '.join(METRICS)}")
        if self.reward_weights and len(self.reward_weights) != len(self.rewards):
            p.append(f"grpo.reward_weights: {len(self.reward_weights)} weights for {len(self.rewards)} rewards")
        if self.num_generations < 2:
            p.append(f"grpo.num_generations: at least 2 (a group of one has no mean to compare with), got "
                     f"{self.num_generations}")
        elif cfg.train.batch_size % self.num_generations:
            p.append(f"train.batch_size: task grpo counts sampled answers; {cfg.train.batch_size} is not a multiple "
                     f"of grpo.num_generations {self.num_generations}")
        if self.max_completion_length < 1:
            p.append(f"grpo.max_completion_length: at least 1, got {self.max_completion_length}")
        if self.temperature <= 0:
            p.append(f"grpo.temperature: must be positive, got {self.temperature}")
        if self.beta < 0:
            p.append(f"grpo.beta: must not be negative, got {self.beta}")
        return p


@dataclass
class DistributedConfig:
    strategy: Literal["auto", "ddp", "fsdp", "deepspeed"] = doc(
        "How the processes of a multi-process run (`weitiao train --nproc N`, or the same command under torchrun "
        "or accelerate launch) share the work. `ddp`: each process holds the whole model and gradients are "
        "averaged (PyTorch DistributedDataParallel). `fsdp`: weights, gradients and optimizer states are sharded "
        "across the processes (PyTorch FSDP2, one unit per decoder layer, applied by transformers as it loads the "
        "model; arXiv:2304.11277). `deepspeed`: DeepSpeed ZeRO (CUDA GPUs and `pip install deepspeed`). `auto`: "
        "ddp. A run on one process is a single-device run whatever this says, and the run records what it ran.",
        "auto")
    fsdp_sharding: Literal["full_shard", "shard_grad_op"] = doc(
        "fsdp: `full_shard` gathers each layer's weights for its forward and frees them after it (least memory, "
        "ZeRO-3-like); `shard_grad_op` keeps the gathered weights from forward to backward (less communication, "
        "more memory, ZeRO-2-like).", "full_shard")
    fsdp_cpu_offload: bool = doc("fsdp: keep the sharded weights, gradients and optimizer states in CPU memory "
                                 "(for GPUs short of memory).", False)
    zero_stage: int = doc("deepspeed: ZeRO stage: 1 shards optimizer states, 2 also gradients, 3 also weights.", 2)
    offload_optimizer: bool = doc("deepspeed: optimizer states in CPU memory (ZeRO-Offload).", False)
    offload_params: bool = doc("deepspeed: ZeRO-3 weights in CPU memory (ZeRO-Infinity).", False)
    backend: Literal["auto", "gloo", "nccl"] = doc(
        "torch.distributed backend: `auto` is nccl between GPUs and gloo between CPU processes.", "auto")

    def problems(self) -> list[str]:
        p = [] if self.zero_stage in (1, 2, 3) else [f"distributed.zero_stage: 1, 2 or 3, got {self.zero_stage}"]
        if self.offload_params and self.zero_stage != 3:
            p.append("distributed.offload_params: weights are offloaded under ZeRO stage 3 only")
        return p


@dataclass
class OutputConfig:
    dir: str = doc("Output folder of the run (relative to the current directory).", "runs/run")
    overwrite: bool = doc("Replace an existing output folder (also `--overwrite`).", False)


@dataclass
class Config:
    task: Literal["sft", "pretrain", "classify", "regress", "dpo", "kto", "orpo", "simpo", "grpo", "reward"] = doc(
        "`sft`: a causal LM learns to write the answers. `pretrain`: continued pre-training of a causal LM on "
        "plain-text documents (`text` rows, or .txt files), each cut into `data.max_length` pieces, none dropped, "
        "scored by held-out perplexity. `classify`: a sequence-classification head on an encoder "
        "or a decoder learns `labelled` rows' labels. `regress`: a one-output head learns `labelled` rows' numeric "
        "labels with mean squared error. `dpo`: preference optimisation on chosen/rejected pairs "
        "(TRL's DPOTrainer), usually starting from an SFT run. `kto`: Kahneman-Tversky optimisation (TRL's "
        "KTOTrainer) on the same pairs taken apart into desirable and undesirable answers. `orpo` and `simpo`: "
        "preference optimisation without a reference model (TRL's ORPOTrainer; CPOTrainer with the SimPO loss), "
        "so no second copy of the weights or frozen adapter. `grpo`: reinforcement learning from a reward a program "
        "computes (`grpo.rewards`) on answers the model samples for the training questions (TRL's GRPOTrainer), "
        "from a model or a finished sft run. `reward`: a reward "
        "model (one-output sequence-classification head) learns to score the chosen answer above the rejected one "
        "(TRL's RewardTrainer).", "sft")
    model: ModelConfig = doc("The pretrained model.", default_factory=ModelConfig)
    data: DataConfig = doc("Datasets, format, template and labels.", default_factory=DataConfig)
    method: MethodConfig = doc("How the model is changed.", default_factory=lambda: method_config_type()())
    train: TrainConfig = doc("Optimisation.", default_factory=TrainConfig)
    eval: EvalConfig = doc("Evaluation after training.", default_factory=EvalConfig)
    preference: PreferenceConfig = doc("`task: dpo` and `task: reward`: the preference loss.",
                                       default_factory=PreferenceConfig)
    grpo: GrpoConfig = doc("`task: grpo`: the rewards and the sampling.", default_factory=GrpoConfig)
    distributed: DistributedConfig = doc("Several processes, GPUs or machines (`weitiao train --nproc N`).",
                                         default_factory=DistributedConfig)
    rephrase: RephraseConfig = doc("Rephrased questions: `weitiao eval --rephrase` and `weitiao data augment "
                                   "--rephrase`.", default_factory=RephraseConfig)
    output: OutputConfig = doc("Where results go.", default_factory=OutputConfig)
    # Folder of the YAML file: relative data paths are resolved against it. Not a user field.
    base_dir: str = field(default=".", metadata={"internal": True})


# --------------------------------------------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------------------------------------------


def did_you_mean(word: str, choices, prefix: str = "") -> str:
    """' (did you mean 'x'?)' for the closest choice, or ''."""
    hint = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {prefix + hint[0]!r}?)" if hint else ""


def user_fields(cls) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is list:
        inner = _type_name(typing.get_args(tp)[0])
        return "a list of " + (inner.split(" ", 1)[1] + "s" if inner.startswith(("a ", "an ")) else inner)
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a section"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(tp, str(tp))


def _convert(value: Any, tp: Any, path: str, errors: list[str]) -> Any:
    """Check `value` against the type hint `tp`; return the converted value (errors appended, never raised)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a section (mapping), got {value!r}")
            return tp()
        return _build(tp, value, path, errors)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], path, errors)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            errors.append(f"{path}: {value!r} is not {_type_name(tp)}{did_you_mean(value, choices)}")
            return choices[0]
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if value is None:
            return []
        if not isinstance(value, list):
            value = [value]  # a single path or name is accepted where a list is expected
        return [_convert(v, item_tp, f"{path}[{i}]", errors) for i, v in enumerate(value)]
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a mapping, got {value!r}")
            return {}
        return {str(k): str(v) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            errors.append(f"{path}: expected true or false, got {value!r}")
            return False
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{path}: expected an integer, got {value!r}")
            return 0
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 2e-4 as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append(f"{path}: expected a number, got {value!r}")
            return 0.0
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            errors.append(f"{path}: expected a string, got {value!r}")
            return ""
        return str(value)
    raise TypeError(f"unsupported config type {tp} at {path}")  # a weitiao bug, not a user error


def type_hints(cls) -> dict:
    """The fields' types; `MethodConfig` is the `method` section as the registry builds it now."""
    return typing.get_type_hints(cls, localns={"MethodConfig": method_config_type()})


def _build(cls, data: dict, prefix: str, errors: list[str]):
    hints = type_hints(cls)
    fields = {f.name: f for f in user_fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            extra = did_you_mean(key, fields, prefix + "." if prefix else "")
            where = f"section {prefix!r}" if prefix else "the top level"
            errors.append(f"{path}: unknown key in {where}{extra}")
            continue
        kwargs[key] = _convert(value, hints[key], path, errors)
    return cls(**kwargs)


def _apply_override(data: dict, override: str, errors: list[str]) -> None:
    """Apply one `section.key=value` override; the value is parsed as YAML (`3`, `true`, `[a, b]`)."""
    if "=" not in override:
        errors.append(f"override {override!r}: expected section.key=value")
        return
    dotted, raw = override.split("=", 1)
    keys = dotted.strip().split(".")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    node = data
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[keys[-1]] = value


# What each task is, in one place: the tasks whose rows are chosen/rejected pairs, and those whose result is a
# language model that writes answers (generated, scored, served, and a start for preference optimisation)
PAIR_TASKS = ("dpo", "kto", "orpo", "simpo", "reward")
POLICY_TASKS = ("sft", "dpo", "kto", "orpo", "simpo", "grpo")
POLICY_OPTIMISATION_TASKS = ("dpo", "kto", "orpo", "simpo", "grpo")  # a policy trained further; may start from a run

CLASSIFY_METRICS = ("accuracy", "macro_f1")  # always reported for task classify, with the confusion matrix
REGRESS_METRICS = ("mse", "mae", "pearson", "spearman")  # always reported for task regress


@dataclass(frozen=True)
class TaskRule:
    """What a task accepts from the other sections: the compatibility rules, as data."""

    methods: tuple[str, ...] | None  # method.name values it trains; None: every registered method
    formats: tuple[str, ...] | None  # data.format values it reads; None: any but `labelled`
    rows: str  # what its rows are, for the message about data.format
    generates: bool  # scored on generated answers: eval.metrics are generation metrics
    strategies: tuple[str, ...] = ("auto", "ddp", "fsdp", "deepspeed")  # distributed.strategy values it runs under
    rephrase: bool = False  # eval.rephrase after training
    compile: bool = False  # train.compile
    documents: bool = False  # rows are documents, cut into max_length pieces (data.encode_documents)
    streams: bool = False  # data.streaming: trains on rows read as training consumes them
    reference_free: bool = False  # a preference loss without a reference model (ORPO, SimPO)


PAIRS = "trains on chosen/rejected pairs"
CONVERSATION_FORMATS = tuple(CONVERTERS)
TASK_RULES = {
    "sft": TaskRule(None, None, "trains on conversations or text", generates=True, rephrase=True,
                    compile=True, streams=True),
    "pretrain": TaskRule(None, ("text",), "reads plain-text documents", generates=False, compile=True,
                         documents=True, streams=True),
    "dpo": TaskRule(("full", "freeze", "lora", "qlora"), PREFERENCE_FORMATS, PAIRS, generates=True,
                    strategies=("auto", "ddp")),
    "kto": TaskRule(("full", "freeze", "lora", "qlora"), PREFERENCE_FORMATS, PAIRS, generates=True,
                    strategies=("auto", "ddp")),
    "orpo": TaskRule(("full", "freeze", "lora", "qlora"), PREFERENCE_FORMATS, PAIRS, generates=True,
                     strategies=("auto", "ddp"), reference_free=True),
    "simpo": TaskRule(("full", "freeze", "lora", "qlora"), PREFERENCE_FORMATS, PAIRS, generates=True,
                      strategies=("auto", "ddp"), reference_free=True),
    "grpo": TaskRule(("full", "freeze", "lora", "qlora"), CONVERSATION_FORMATS,
                     "trains on questions whose last turn is the reference answer", generates=True,
                     strategies=("auto",), rephrase=True),
    "reward": TaskRule(("lora", "full"), PREFERENCE_FORMATS, PAIRS, generates=False, strategies=("auto", "ddp")),
    "classify": TaskRule(("lora", "full"), ("labelled",), "reads text + label rows", generates=False,
                         strategies=("auto", "ddp")),
    "regress": TaskRule(("lora", "full"), ("labelled",), "reads text + numeric label rows", generates=False,
                        strategies=("auto", "ddp")),
}
# distributed.strategy x method.name: what each strategy trains here (qlora and the virtual-token methods run on one
# process or under ddp)
STRATEGY_METHODS = {"fsdp": ("full", "freeze", "lora")}
COMPILED_METHODS = ("full", "freeze", "lora", "qlora")  # train.compile: methods without virtual tokens
COMPILED_STRATEGIES = ("auto", "ddp")


def listed(names, last: str) -> str:
    """`a, b and c` (last="and") or `a, b or c`."""
    return ", ".join(names[:-1]) + f" {last} {names[-1]}" if len(names) > 1 else "".join(names)


def semantic_problems(cfg: Config) -> list[str]:
    """Checks across fields (types are already right): each section's own, then what the sections must agree on.
    Every problem is reported, not the first."""
    p = (cfg.model.problems() + cfg.data.problems() + cfg.method.problems() + cfg.train.problems()
         + cfg.eval.problems() + cfg.rephrase.problems() + cfg.distributed.problems())
    if cfg.task in PAIR_TASKS:
        p += cfg.preference.problems(cfg.task)
    if cfg.task == "grpo":
        p += cfg.grpo.problems(cfg)
    return p + compatibility_problems(cfg) + metric_problems(cfg)


def compatibility_problems(cfg: Config) -> list[str]:
    """task x format x method x strategy, from TASK_RULES and the tables next to it."""
    rule, task, d, m, t = TASK_RULES[cfg.task], cfg.task, cfg.data, cfg.method, cfg.train
    p = []
    if rule.formats and d.format not in rule.formats:
        p.append(f"data.format: task {task} {rule.rows}: use format {' or '.join(rule.formats)}, got {d.format!r}")
    elif rule.formats is None and d.format == "labelled":
        p.append("data.format: labelled rows are for task classify or regress (set the task)")
    if rule.methods is not None and m.name not in rule.methods:
        p.append(f"method.name: task {task} supports {', '.join(rule.methods)}, got {m.name!r}")
    if t.class_weights != "none" and task != "classify":
        p.append("train.class_weights: applies to task classify only")
    strategy = cfg.distributed.strategy
    if strategy not in rule.strategies:
        p.append(f"distributed.strategy: {strategy} runs task sft only for now; task {task} runs on one process" +
                 (" or under ddp" if "ddp" in rule.strategies else ""))
    if strategy in STRATEGY_METHODS and m.name not in STRATEGY_METHODS[strategy]:
        p.append(f"distributed.strategy: {strategy} trains {listed(STRATEGY_METHODS[strategy], 'and')}; {m.name} is "
                 f"not supported under {strategy.upper()} here (use ddp)")
    if t.compile and not (rule.compile and m.name in COMPILED_METHODS and strategy in COMPILED_STRATEGIES):
        p.append(f"train.compile: applies to task sft with {listed(COMPILED_METHODS, 'or')}, on one process or "
                 f"under ddp (got task {task}, method {m.name}, distributed.strategy {strategy})")
    if d.streaming and not rule.streams:
        p.append(f"data.streaming: applies to task sft and pretrain, not {task}")
    if d.streaming and t.max_steps <= 0:
        p.append("data.streaming: set train.max_steps (a stream has no length to count epochs by)")
    if d.streaming and t.group_by_length:
        p.append("train.group_by_length: needs the whole training split; it does not apply with data.streaming")
    r = cfg.rephrase
    if cfg.eval.rephrase and not (r.templates or r.model):
        p.append("eval.rephrase: set rephrase.templates (a file of rules) or rephrase.model (a model that writes "
                 "the rephrasings)")
    if cfg.eval.rephrase and not rule.rephrase:
        p.append(f"eval.rephrase: rephrased questions after training are for task sft, not {task}; use "
                 "weitiao eval RUN --rephrase")
    return p


def metric_problems(cfg: Config) -> list[str]:
    """eval.metrics: generation metrics (or module:function) for a task that generates, the classification
    scores for classify; none for reward, whose score is pairwise accuracy."""
    from weitiao.evaluation.metrics import METRICS, user_metric  # local import: metrics pull in nothing heavy

    p = []
    for i, name in enumerate(cfg.eval.metrics):
        reported = {"classify": CLASSIFY_METRICS, "regress": REGRESS_METRICS}.get(cfg.task)
        if reported:
            if name not in reported:
                p.append(f"eval.metrics[{i}]: task {cfg.task} reports {', '.join(reported)}; got {name!r}")
        elif not TASK_RULES[cfg.task].generates:
            continue
        elif ":" in name:  # a user metric, module:function
            try:
                user_metric(name)
            except ValueError as err:
                p.append(f"eval.metrics[{i}]: user metric {name!r}: {err}")
        elif name not in METRICS:
            p.append(f"eval.metrics[{i}]: unknown metric {name!r}{did_you_mean(name, METRICS)}; "
                     f"known: {', '.join(METRICS)}, or module:function for your own")
    return p


def config_from_dict(data: dict, source: str = "<config>", base_dir: str = ".") -> Config:
    errors: list[str] = []
    cfg = _build(Config, data, "", errors)
    cfg.base_dir = base_dir
    if not errors:
        errors.extend(semantic_problems(cfg))
    if errors:
        raise ConfigError(source, errors)
    return cfg


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    """Read a YAML config, apply `section.key=value` overrides, validate, and return the typed config."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), ["file not found"])
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(str(path), [f"{where}not valid YAML ({getattr(err, 'problem', err)})"]) from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), ["not valid UTF-8"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), ["the top level must be a mapping of sections"])
    errors: list[str] = []
    for o in overrides:
        _apply_override(data, o, errors)
    if errors:
        raise ConfigError(str(path), errors)
    return config_from_dict(data, str(path), str(path.resolve().parent))


def config_to_dict(cfg: Config) -> dict:
    out = dataclasses.asdict(cfg)
    out.pop("base_dir", None)
    return out


def resolved(cfg: Config) -> Config:
    """A copy with data paths made absolute, so the saved config works from any directory."""
    import copy

    out = copy.deepcopy(cfg)
    for name in ("train", "val", "test"):
        paths = getattr(out.data, name)
        setattr(out.data, name, [str((Path(cfg.base_dir) / Path(p).expanduser()).resolve()) for p in paths])
    return out


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True)


def config_reference(markdown: bool = False) -> str:
    """Every config field with its type, default and help, from the dataclasses (the one source of docs)."""
    lines: list[str] = []

    def walk(cls, prefix: str):
        hints = type_hints(cls)
        for f in user_fields(cls):
            tp = hints[f.name]
            path = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(tp):
                if markdown:
                    lines.append(f"\n**`{path}`**: {f.metadata['help']}\n")
                    lines.append("| key | type | default | meaning |\n|---|---|---|---|")
                else:
                    lines.append(f"\n[{path}] {f.metadata['help']}")
                walk(tp, path + ".")
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            dflt = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("\n...").strip()
            if markdown:
                help_text = f.metadata["help"].replace("|", "\\|")
                lines.append(f"| `{path}` | {_type_name(tp)} | `{dflt}` | {help_text} |")
            else:
                lines.append(f"  {path} = {dflt}    ({_type_name(tp)})\n      {f.metadata['help']}")

    walk(Config, "")
    return "\n".join(lines).strip() + "\n"
