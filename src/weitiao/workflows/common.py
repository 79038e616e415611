"""Steps shared by the workflows: device and precision, loss and generation scoring, and the run folder.

Each workflow (`sft.py`, `evaluate.py`) reads top to bottom and calls these; nothing here decides the order.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from weitiao.config import POLICY_TASKS, PREFERENCE_OPTIMISATION_TASKS, Config
from weitiao.data.dataset import PadCollator
from weitiao.data.encode import IGNORE_INDEX, Encoded, prompt_and_reference
from weitiao.data.formats import Example
from weitiao.errors import WeitiaoError
from weitiao.evaluation.generate import generate
from weitiao.evaluation.metrics import score

RUN_FILE = "run.json"  # {"status": "running" | "finished", ...}: marks a folder as a weitiao run


def log(msg: str) -> None:
    """Print a progress line; in a multi-process run, rank 0 alone prints (the others would repeat it)."""
    if os.environ.get("RANK", "0") == "0":
        print(msg, flush=True)


# ---------------------------------------------------------------- model files


def find_model(cfg: Config, name_or_path: str | None = None):
    """(source, local folder, tokenizer, chat template) of the configured model; no weights are loaded.

    Checks everything that can fail on the user's side (missing path, pickle weights, unusable template) first.
    """
    from weitiao.data.templates import resolve_template
    from weitiao.models.loading import load_tokenizer, local_folder, resolve_source

    m = cfg.model
    start = Path(m.name_or_path).expanduser()
    if name_or_path is None and cfg.task in PREFERENCE_OPTIMISATION_TASKS and (start / RUN_FILE).is_file():
        return run_base(start)  # preference optimisation continues a finished run
    source = resolve_source(name_or_path or m.name_or_path, m.convert_pickle)
    if m.trust_remote_code:
        log(f"warning: model.trust_remote_code is on: code shipped with {source.label} will run")
    folder = local_folder(source, log, m.trust_remote_code)
    tokenizer = load_tokenizer(folder, m.trust_remote_code)
    template = resolve_template(tokenizer, m.chat_template)
    return source, folder, tokenizer, template


@dataclass
class Start:
    """Where a preference run starts: a model, or a finished run's model or LoRA adapter with its template."""

    source: object  # models.loading.ModelSource of the weights loaded
    folder: str  # local model folder (the base, when `adapter` is set)
    tokenizer: object
    template: object
    adapter: str | None = None  # the run's LoRA adapter folder, trained further
    run_dir: Path | None = None


def find_start(cfg: Config) -> Start:
    """The model a `task: dpo`/`kto` run starts from; `model.name_or_path` may be a finished SFT (or DPO/KTO)
    run folder."""
    from weitiao.methods import PROMPT_LEARNING_METHODS
    from weitiao.workflows.evaluate import load_run

    source, folder, tokenizer, template = find_model(cfg)
    run_dir = Path(cfg.model.name_or_path).expanduser()
    if not (run_dir / RUN_FILE).is_file():
        return Start(source, folder, tokenizer, template)
    _, adapter, _ = load_run(run_dir)
    if adapter and cfg.method.name not in ("lora", "qlora"):
        raise WeitiaoError(f"model.name_or_path: {run_dir} holds a LoRA adapter: continue it with method lora or "
                           f"qlora, or make a full model folder with `weitiao export {run_dir} --out DIR` and start "
                           "from that")
    if cfg.model.chat_template != "auto":
        log(f"note: model.chat_template is ignored: the run {run_dir} brings its own template ({template.name})")
    return Start(source, folder, tokenizer, template, adapter, run_dir)


def run_base(run_dir: Path):
    """find_model's answer for a finished run used as a starting point: its full model folder or its base model
    (followed through a chain of DPO runs), and the run's own chat template."""
    from weitiao.config import load_config
    from weitiao.methods import PROMPT_LEARNING_METHODS
    from weitiao.serving.loaded import run_template
    from weitiao.workflows.evaluate import load_run

    config_path, _, model_dir = load_run(run_dir)
    run_cfg = load_config(config_path)
    where = f"model.name_or_path: {run_dir}"
    if run_cfg.task not in POLICY_TASKS:
        raise WeitiaoError(f"{where} is a task {run_cfg.task} run; preference optimisation starts from a language "
                           "model (an sft, dpo or kto run)")
    if run_cfg.method.name in PROMPT_LEARNING_METHODS:
        raise WeitiaoError(f"{where} trained a {run_cfg.method.name} adapter, which DPO and KTO cannot train further; "
                           "start from its base model, or from a lora/full run")
    source, folder, tokenizer, _ = find_model(run_cfg, model_dir)
    return source, folder, tokenizer, run_template(run_dir, tokenizer)


# ---------------------------------------------------------------- precision


def autocast_dtype(precision: str, device: str):
    """The dtype of mixed-precision autocast, or None for full fp32."""
    if precision == "auto":
        return torch.bfloat16 if fast_bf16(device) else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def weights_dtype(cfg: Config, device: str) -> str:
    """model.dtype as a training run resolves it (see its doc): `auto` is bfloat16 on a GPU that supports it, and
    on a CPU for a LoRA SFT run (its base weights stay frozen) under bf16 autocast. Under autocast a frozen fp32
    weight is cast to bf16 in every forward (autocast caches the casts of trainable weights only) and its bf16 copy
    is kept for the backward; stored in bf16, neither happens, and the matmuls see the same bf16 values. The
    virtual-token methods freeze the base too, but were not measured so; qlora quantizes it."""
    if cfg.model.dtype != "auto":
        return cfg.model.dtype
    if device == "cuda":
        return "bfloat16" if fast_bf16(device) else "float32"
    frozen_base = cfg.task == "sft" and cfg.method.name == "lora"
    return "bfloat16" if frozen_base and autocast_dtype(cfg.train.precision, device) == torch.bfloat16 \
        and fast_bf16(device) else "float32"


def fast_bf16(device: str) -> bool:
    """Whether bf16 matmuls run natively here: a CUDA GPU that supports bf16, or a CPU with avx512_bf16 or AMX.

    Elsewhere bf16 is emulated and slow: on a 2-core AVX2 EPYC, a 1024^3 bf16 matmul ran at 0.8 GFLOP/s against
    74 GFLOP/s in fp32 (measured with torch 2.13); on a Xeon with AMX, bf16 was about 4x fp32.
    """
    if device == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return cpu_bf16_native()


def cpu_bf16_native() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False  # not Linux: fp32 is the safe default
    return "avx512_bf16" in flags or "amx_bf16" in flags


def precision_warning(precision: str, device: str) -> str | None:
    """A warning when the config asks for bf16 on a device where it is emulated (many times slower than fp32)."""
    if precision == "bf16" and not fast_bf16(device):
        return (f"warning: train.precision bf16 on this {device}, which has no native bf16 (no avx512_bf16/AMX): "
                "bf16 is emulated and can be far slower than fp32; train.precision auto picks bf16 only where it "
                "is fast")
    return None


# ---------------------------------------------------------------- evaluation


@contextlib.contextmanager
def base_model_context(model):
    """Yields the base model to score: a prompt-learning adapter's plain base model (it adds nothing inside the
    model, and weitiao's virtual-token decoder must not see it), a peft model with its adapters disabled, or the
    model itself for other methods, which have not changed any weight yet when this is used."""
    from weitiao.evaluation.virtual_tokens import uses_virtual_tokens

    if uses_virtual_tokens(model):
        yield model.get_base_model()
    elif hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            yield model
    else:
        yield model


@torch.no_grad()
def token_losses(model, encoded: list[Encoded], pad_id: int, batch_size: int = 8,
                 amp_dtype=None) -> list[tuple[float, int]]:
    """Per example: (summed cross-entropy over its label tokens, number of label tokens)."""
    model.eval()
    device = next(model.parameters()).device
    collate = PadCollator(pad_id)
    rows = []
    for start in range(0, len(encoded), batch_size):
        batch = collate([{"input_ids": e.input_ids, "labels": e.labels} for e in encoded[start:start + batch_size]])
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           use_cache=False).logits
        # logits (B, T, V) predict token t+1 from position t; prompt-learning adapters also return logits for
        # their n_virtual leading virtual tokens, (B, n_virtual + T, V): keep the last T
        logits = logits[:, -batch["input_ids"].shape[1]:]
        shift_labels = batch["labels"][:, 1:]  # (B, T-1)
        # only the label positions' logits go to fp32 (N, V): an fp32 copy of the whole (B, T, V) logits was
        # 40 rows x 88 tokens x 49,152 x 4 bytes = 0.7 GB per copy for the quickstart's test batches
        keep = shift_labels != IGNORE_INDEX  # (B, T-1)
        per_token = torch.nn.functional.cross_entropy(logits[:, :-1][keep].float(), shift_labels[keep],
                                                      reduction="none")  # (N,)
        sums = torch.zeros(keep.shape[0], dtype=per_token.dtype, device=per_token.device)
        sums.index_add_(0, keep.nonzero()[:, 0], per_token)  # keep.nonzero() is row-major, as keep's selection
        rows += [(float(s), int(n)) for s, n in zip(sums.tolist(), keep.sum(dim=1).tolist())]
    return rows


def mean_loss(rows: list[tuple[float, int]]) -> float:
    """Mean cross-entropy over all label tokens of per-row (sum, count) pairs: token-weighted, not a mean of row
    or batch means."""
    return sum(s for s, _ in rows) / max(sum(n for _, n in rows), 1)


@dataclass
class SplitScores:
    rows: int  # rows scored (eval.max_samples may cap the split)
    metrics: dict  # loss, perplexity and each generation metric
    predictions: list[str]
    per_row: list[dict]
    row_losses: list[tuple[float, int]]  # per scored row: (summed cross-entropy, label tokens)

    def as_dict(self) -> dict:
        return {"rows": self.rows, "metrics": self.metrics, "predictions": self.predictions, "per_row": self.per_row,
                "row_losses": self.row_losses}


def score_split(model, tokenizer, template, examples: list[Example], encoded: list[Encoded], cfg: Config,
                amp_dtype, label: str) -> SplitScores:
    """Loss/perplexity on `encoded` and generation metrics on `examples`, with `cfg.eval` decoding."""
    started = time.time()
    n = cfg.eval.max_samples or len(examples)
    examples, encoded = examples[:n], encoded[:n]
    log(f"[{label}] test loss on {len(encoded)} rows ...")
    # in training-sized batches: the memory estimate covers a training step at train.batch_size, which holds far
    # more than a forward pass; batches of eval.generation.batch_size (40 in the quickstart) raised its peak RSS
    # from 3.0 to 5.5 GiB on top of what training had left in the allocator
    row_losses = token_losses(model, encoded, tokenizer.pad_token_id, cfg.train.batch_size, amp_dtype)
    loss = mean_loss(row_losses)
    metrics = {"loss": round(loss, 6), "perplexity": round(math.exp(min(loss, 50.0)), 4)}
    predictions, per_row = [], []
    chat_rows = [ex for ex in examples if ex.text is None]
    if (cfg.eval.metrics or cfg.eval.reward_model) and chat_rows:
        pairs = [prompt_and_reference(ex, template, tokenizer) for ex in chat_rows]
        log(f"[{label}] generating {len(pairs)} answers (greedy={not cfg.eval.generation.do_sample}, "
            f"max_new_tokens={cfg.eval.generation.max_new_tokens}) ...")
        predictions = generate(model, tokenizer, [p for p, _ in pairs], cfg.eval.generation, template.stop_ids,
                               amp_dtype)
        means, per_row = score(cfg.eval.metrics, predictions, [r for _, r in pairs])
        if cfg.eval.reward_model:  # the answers as a trained reward model ranks them (task: reward)
            from weitiao.evaluation.reward import RewardScorer

            scorer = RewardScorer.of(cfg.eval.reward_model, str(next(model.parameters()).device), amp_dtype,
                                     cfg.eval.generation.batch_size)
            rewards = scorer.score(chat_rows, predictions)
            means["reward"] = sum(rewards) / len(rewards)
            for row, r in zip(per_row, rewards):
                row["reward"] = round(r, 5)
        metrics.update({k: round(v, 6) for k, v in means.items()})
    log(f"[{label}] scored in {time.time() - started:.1f}s: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return SplitScores(len(encoded), metrics, predictions, per_row, row_losses)


def comparison_table(title: str, columns: dict[str, dict]) -> str:
    """A fixed-width table of metrics, one column per model; with two columns, a change column is added."""
    names = list(columns)
    keys = list(columns[names[-1]])
    width = max(len(title), *(len(k) for k in keys)) + 2
    header = f"{title:<{width}}" + "".join(f"{n:>10}" for n in names) + (f"{'change':>10}" if len(names) == 2 else "")
    lines = [header]
    for k in keys:
        values = [columns[n].get(k) for n in names]
        cells = "".join(f"{v:>10.4f}" if v is not None else f"{'-':>10}" for v in values)
        if len(values) == 2 and None not in values:
            cells += f"{values[1] - values[0]:>+10.4f}"
        lines.append(f"{k:<{width}}{cells}")
    return "\n".join(lines)


# ---------------------------------------------------------------- run folder


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("weitiao", "torch", "transformers", "peft", "trl", "accelerate", "datasets", "tokenizers",
                "safetensors"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    out["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
    return out


def read_splits(cfg: Config, what: str = "rows"):
    """Every row of every split read and checked (`load_splits`: all bad rows reported together), and copies of
    training rows in val/test (leakage) logged and recorded in the report. Returns (splits, skipped): `skipped`
    collects the bad rows when `data.skip_bad_rows` is on, else it is None."""
    from weitiao.data.check import find_overlaps
    from weitiao.data.dataset import load_splits

    splits = load_splits(cfg.data, cfg.base_dir, skip_bad_rows=cfg.data.skip_bad_rows)
    log(f"data: {len(splits.train)} train / {len(splits.val)} val / {len(splits.test)} test {what} "
        f"(format {cfg.data.format}; {splits.report['train_duplicates_dropped']} duplicates and "
        f"{splits.report['train_empty_rows_dropped']} empty rows dropped)")
    skipped = list(splits.bad) if cfg.data.skip_bad_rows else None
    leakage = {name: find_overlaps(splits.train, getattr(splits, name), cfg.data.near_duplicate_threshold)
               for name in ("val", "test") if getattr(splits, name)}
    for name, ov in leakage.items():
        if ov.exact or ov.near:
            log(f"warning: {len(ov.exact)} exact and {len(ov.near)} near copies of training rows in the {name} "
                f"split (leakage); `weitiao data check` lists them")
    splits.report["leakage"] = {name: ov.as_dict() for name, ov in leakage.items()}
    return splits, skipped


def write_run_files(out_dir: Path, cfg: Config, template, report: dict, skipped: list | None) -> None:
    """What makes a run folder describe itself from its start: status, resolved config, versions, chat template,
    data report, and the rows skipped."""
    from weitiao.config import dump_config, resolved

    write_json(out_dir / RUN_FILE, {"status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    (out_dir / "config.yaml").write_text(dump_config(resolved(cfg)), encoding="utf-8")
    write_json(out_dir / "versions.json", versions())
    (out_dir / "chat_template.jinja").write_text(template.jinja, encoding="utf-8")
    write_json(out_dir / "template.json", template.describe())
    write_json(out_dir / "data_report.json", report)
    if skipped is not None:
        (out_dir / "skipped_rows.jsonl").write_text(
            "".join(json.dumps(b.as_dict(), ensure_ascii=False) + "\n" for b in skipped), encoding="utf-8")


def run_state(out_dir: Path) -> str:
    """'absent' (missing or empty), 'finished', 'unfinished' (a weitiao run that did not end), or 'foreign'."""
    if not out_dir.exists() or (out_dir.is_dir() and not any(out_dir.iterdir())):
        return "absent"
    run_file = out_dir / RUN_FILE
    if not out_dir.is_dir() or not run_file.is_file():
        return "foreign"
    try:
        status = json.loads(run_file.read_text()).get("status")
    except (json.JSONDecodeError, OSError):
        return "unfinished"
    return "finished" if status == "finished" else "unfinished"


def check_output_dir(out_dir: Path, overwrite: bool, resume: bool) -> str:
    """Decide what to do with the output folder before anything is written; returns 'fresh' or 'resume'.

    An unfinished run (killed, interrupted, or stopped by a guard) is resumed automatically; a finished one is
    replaced only with --overwrite; a folder that is not a weitiao run is never touched.
    """
    state = run_state(out_dir)
    if state == "foreign":
        raise WeitiaoError(f"output.dir: {out_dir} exists and is not a weitiao run folder; "
                           "choose another output.dir (weitiao will not delete it)")
    if overwrite:
        return "fresh"
    if state == "finished":
        what = "--resume: nothing to resume, " if resume else ""
        raise WeitiaoError(f"output.dir: {what}{out_dir} already holds a finished run; pass --overwrite to replace "
                           "it or choose another output.dir")
    if state == "unfinished":
        return "resume"
    if resume:
        raise WeitiaoError(f"--resume: {out_dir} holds no run to resume")
    return "fresh"


def write_json(path: Path, obj) -> None:
    """Write JSON atomically (temp file + rename), so a crash never leaves a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def prediction_rows(examples: list[Example], tuned: dict, base: dict | None, **per_example) -> list[dict]:
    """predictions.jsonl: per scored test row, the prompt, the reference, each model's answer and metric scores,
    and its loss on the row (mean cross-entropy per answer token, and the token count) for `weitiao compare`.
    `per_example` adds fields taken from each example, e.g. rejected=lambda ex: ex.rejected."""
    rows = []
    for i, ex in enumerate(examples[: tuned["rows"]]):
        row = {"where": ex.where}
        if ex.text is None:
            row.update(prompt=ex.messages[-2][1], reference=ex.messages[-1][1])
        else:
            row.update(text=ex.text)
        row.update({k: f(ex) for k, f in per_example.items()})
        for name, scores in (("tuned", tuned), ("base", base)):
            if not scores:
                continue
            if i < len(scores["predictions"]):
                row.update({name: scores["predictions"][i], f"{name}_scores": scores["per_row"][i]})
            losses = scores.get("row_losses") or []
            if i < len(losses):
                row.update({f"{name}_loss": round(losses[i][0] / max(losses[i][1], 1), 6),
                            f"{name}_tokens": losses[i][1]})
        rows.append(row)
    return rows


def write_predictions(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, path)


def forgetting_summary(base_rows: list, tuned_rows: list) -> dict:
    """metrics.json's `forgetting`: the general-text loss before and after, with each paragraph's (sum, tokens)
    so that `weitiao compare` can put an interval on the change."""
    base_loss, tuned_loss = mean_loss(base_rows), mean_loss(tuned_rows)
    return {"paragraphs": len(base_rows), "tokens": sum(n for _, n in base_rows), "base_loss": round(base_loss, 6),
            "tuned_loss": round(tuned_loss, 6), "change": round(tuned_loss - base_loss, 6),
            "base": {"rows": [[round(s, 5), n] for s, n in base_rows]},
            "tuned": {"rows": [[round(s, 5), n] for s, n in tuned_rows]}}


def write_report(out_dir: Path) -> None:
    """The base-vs-tuned report of a finished run (eval.report). The run is saved before this: a failure here is
    reported and leaves the run as it is, and `weitiao compare RUN` makes the report again."""
    from weitiao.workflows import compare

    log("")
    try:
        compare.run(out_dir)
    except Exception as err:  # noqa: BLE001 - the run itself is complete; the report can be made again
        log(f"warning: the report could not be written ({type(err).__name__}: {err}); the run is complete; "
            f"make the report with: weitiao compare {out_dir}")


def remove_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def plot_losses(log_history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    val = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss", color="tab:blue")
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss", color="tab:orange")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("weitiao training")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
