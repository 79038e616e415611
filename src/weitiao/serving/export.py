"""Export a run as a standard Hugging Face folder that plain transformers (or any server) loads: merge, check, write.

LoRA runs: the adapter is merged into the base (W' = W + (alpha/r) * B @ A, Hu et al. 2021) with peft's
`merge_and_unload`. QLoRA runs: the 4-bit/8-bit base is de-quantized first (the weights training actually saw,
W = dequant(Q)), and the merge goes into that copy; the folder says so. Full and freeze runs are already a model
folder: they are re-saved in the chosen dtype with the run's template and stop tokens. Prefix, prompt and P-tuning
runs add virtual tokens, not weight deltas: they cannot be merged and are exported as the adapter plus the
tokenizer, with a note.

Before anything is written to the destination, the folder is saved to a temporary sibling, re-loaded with plain
`AutoModelForCausalLM`, and its logits on sample prompts are compared with the unmerged model's; beyond the
tolerance the export is refused with the numbers. The template round trip (`template_check`) runs on the saved
tokenizer and generation config. Only then is the folder moved into place.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from weitiao.errors import WeitiaoError, disk_full_error
from weitiao.serving import template_check
from weitiao.serving.loaded import Loaded, is_run, load

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# The export is compared with the unmerged model position by position, on whole sample conversations (prompt and
# answer), by the total variation distance between the two next-token distributions, TV = 1/2 sum_v |p_v - q_v|
# (0: identical, 1: disjoint), and by how often both pick the same top token. Measured on the quickstart run
# (SmolLM2, 315 positions): fp32 max TV 4.2e-6, top-1 agreement 1.0; fp16 0.0074, 0.997; bf16 0.088, 0.975. The
# bounds leave about 2x headroom over that rounding noise (fp32: far more, as merging only reorders float sums).
MAX_TV = {"fp32": 1e-3, "fp16": 0.05, "bf16": 0.15}
MIN_TOP1_AGREEMENT = {"fp32": 0.999, "fp16": 0.98, "bf16": 0.95}


@dataclass
class LogitCheck:
    max_total_variation: float  # worst position
    mean_total_variation: float
    mean_kl: float  # KL(unmerged || export), nats per position
    top1_agreement: float  # share of positions where both pick the same next token
    positions: int

    def as_dict(self) -> dict:
        return {k: round(v, 8) if isinstance(v, float) else v for k, v in self.__dict__.items()}

    def describe(self) -> str:
        return (f"max total variation {self.max_total_variation:.3g}, mean {self.mean_total_variation:.3g}, mean KL "
                f"{self.mean_kl:.3g}, top-1 agreement {self.top1_agreement:.4f} over {self.positions} positions")


FORMATS = ("hf", "gguf")


@dataclass
class Merged:
    """A run's model made dense (adapter merged; a QLoRA base de-quantized first), in fp32, with the reference
    next-token log-probabilities of the unmerged model on sample conversations."""
    model: object
    conversations: list
    prompts: list[str]
    reference: list[torch.Tensor]
    notes: list[str]


def run(target: str, out: str, dtype: str | None = None, overwrite: bool = False, tolerance: float | None = None,
        format: str = "hf", quant: str | None = None, log=print) -> dict:
    """`weitiao export`: a Hugging Face folder (`hf`, in `dtype`) or a GGUF file with an Ollama Modelfile
    (`gguf`, in `quant`), checked against the unmerged run before it is moved into `out`."""
    from weitiao.serving import gguf_export

    out_dir = Path(out)
    check_request(target, out_dir, overwrite, format, dtype, quant)
    from weitiao.methods import method_of

    # full precision on the CPU for the reference; a QLoRA base is loaded quantized, then de-quantized below
    loaded = load(target, device="cpu", precision="fp32", log=log)
    method = method_of(loaded.method)
    if method.virtual_tokens:
        if format == "gguf":
            raise WeitiaoError(f"--format gguf: a {loaded.method} run adds trained virtual tokens, which llama.cpp "
                               "cannot load; export it with --format hf (the adapter)")
        return export_adapter_only(loaded, out_dir, log)
    if format == "gguf":
        gguf_export.architecture_of(loaded.model.config)  # refuse an unsupported model before merging anything
        return export_gguf(loaded, merge(loaded, method), out_dir, quant or "q8_0", tolerance, log)
    return export_folder(loaded, merge(loaded, method), out_dir, dtype or "fp32", tolerance, log, target)


def check_request(target: str, out_dir: Path, overwrite: bool, format: str, dtype, quant) -> None:
    from weitiao.serving.gguf_export import QUANTS

    if not is_run(target):
        raise WeitiaoError(f"{target}: not a weitiao run folder (no run.json); export takes a finished run")
    if format not in FORMATS:
        raise WeitiaoError(f"--format: one of {', '.join(FORMATS)}, got {format!r}")
    if dtype is not None and (format != "hf" or dtype not in DTYPES):
        raise WeitiaoError(f"--dtype: one of {', '.join(DTYPES)}, for --format hf; got {dtype!r} with --format "
                           f"{format}" + (" (use --quant)" if format == "gguf" else ""))
    if quant is not None and (format != "gguf" or quant not in QUANTS):
        raise WeitiaoError(f"--quant: one of {', '.join(QUANTS)}, for --format gguf; got {quant!r} with --format "
                           f"{format}")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise WeitiaoError(f"--out: {out_dir} exists and is not empty; pass --overwrite to replace it")
    if out_dir.resolve() == Path(target).resolve() or Path(target).resolve() in out_dir.resolve().parents:
        raise WeitiaoError(f"--out: {out_dir} is inside the run folder; export next to it instead")


def merge(loaded: Loaded, method) -> Merged:
    # whole conversations: the answer positions are where an adapter changes the model most
    conversations = template_check.sample_conversations(loaded)  # reads the run's data once
    prompts = [loaded.template.render(loaded.tokenizer, conv) for conv in conversations]
    notes = []
    model = loaded.model
    if method.quantized_base:
        from peft import PeftModel

        quantized_logits = logits_on(model, loaded.tokenizer, prompts)
        base = model.unload()  # the quantized base without the LoRA layers
        base.dequantize()  # transformers: Linear4bit/Linear8bitLt -> nn.Linear holding dequant(Q)
        model = PeftModel.from_pretrained(base.float(), str(loaded.run_dir / "adapter"))
        notes.append("the QLoRA base was de-quantized (the weights the adapter was trained on) and the adapter "
                     "merged into that copy; the folder is a dense model, larger than the 4-bit original")
    reference = logits_on(model, loaded.tokenizer, prompts)
    if method.quantized_base:
        drift = compare(quantized_logits, reference)
        notes.append(f"the de-quantized fp32 model vs the quantized one as trained: {drift.describe()}")
    if loaded.adapters:
        model = model.merge_and_unload()
    return Merged(model, conversations, prompts, reference, notes)


def export_folder(loaded: Loaded, merged: Merged, out_dir: Path, dtype: str, tolerance: float | None, log,
                  target: str) -> dict:
    model = merged.model.to(DTYPES[dtype])
    model.generation_config = generation_config(model, loaded)
    with staged(out_dir) as tmp:
        model.save_pretrained(tmp)
        loaded.tokenizer.save_pretrained(tmp)  # carries the run's chat template (installed by `load`)
        check, checked = verify_folder(tmp, loaded, merged, dtype, tolerance)
        summary = {"source_run": str(Path(target).resolve()), "method": loaded.method, "format": "hf",
                   "dtype": dtype, "merged": bool(loaded.adapters), "logit_check": check.as_dict(),
                   "tolerance": {"max_total_variation": tolerance if tolerance is not None else MAX_TV[dtype],
                                 "min_top1_agreement": MIN_TOP1_AGREEMENT[dtype]},
                   "template_round_trip": f"{checked} conversations identical", "template": loaded.template.describe(),
                   "notes": merged.notes}
        (tmp / "weitiao_export.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n",
                                                 encoding="utf-8")
    log(f"exported {loaded.method} run to {out_dir} ({dtype}); vs the unmerged model: {check.describe()}; "
        f"template round trip ok on {checked} conversations")
    for note in merged.notes:
        log(f"note: {note}")
    return summary


def export_gguf(loaded: Loaded, merged: Merged, out_dir: Path, quant: str, tolerance: float | None, log) -> dict:
    """One GGUF file and an Ollama Modelfile, each checked before the folder is moved into place: the file read
    back by transformers' own GGUF loader (tokens, logits, template), the Modelfile's template against the run's."""
    from weitiao.serving import gguf_export

    pieces = gguf_export.turn_pieces(loaded.template, loaded.tokenizer)
    checked_ollama = gguf_export.check_pieces(pieces, loaded.template, loaded.tokenizer, merged.conversations)
    stops = loaded.tokenizer.convert_ids_to_tokens(list(loaded.template.stop_ids))
    name = f"{loaded.name}.{quant}.gguf"
    with staged(out_dir) as tmp:
        counts = gguf_export.write_gguf(tmp / name, merged.model, loaded.tokenizer, loaded.template, quant,
                                        loaded.name, gguf_pre(loaded))
        check, checked = verify_gguf(tmp, name, loaded, merged, quant, tolerance)
        (tmp / "Modelfile").write_text(gguf_export.modelfile(name, pieces, stops), encoding="utf-8")
        summary = {"source_run": str(loaded.run_dir.resolve()), "method": loaded.method, "format": "gguf",
                   "file": name, "quant": quant, "tensors": counts, "bytes": (tmp / name).stat().st_size,
                   "merged": bool(loaded.adapters), "logit_check": check.as_dict(),
                   "tolerance": {"max_total_variation": tolerance if tolerance is not None else
                                 gguf_export.MAX_TV[quant],
                                 "min_top1_agreement": gguf_export.MIN_TOP1_AGREEMENT[quant]},
                   "template_round_trip": f"{checked} conversations identical",
                   "ollama_template": f"{checked_ollama} conversations identical", "stops": stops,
                   "template": loaded.template.describe(), "notes": merged.notes}
        (tmp / "weitiao_export.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n",
                                                 encoding="utf-8")
    log(f"exported {loaded.method} run to {out_dir / name} ({quant}, {summary['bytes'] / 2**20:.1f} MiB) and "
        f"{out_dir / 'Modelfile'}; read back by transformers' GGUF loader, vs the unmerged model: {check.describe()}; "
        f"template round trip ok on {checked} conversations\nrun it with Ollama: cd {out_dir} && ollama create "
        f"{loaded.name} -f Modelfile && ollama run {loaded.name}")
    return summary


def gguf_pre(loaded: Loaded) -> str | None:
    """llama.cpp's name for the tokenizer's pre-tokenization: the base GGUF's own when the run started from one."""
    from weitiao.serving.gguf_export import pre_tokenizer_name, read_string, tokenizer_json

    source = loaded.source
    if source is not None and source.kind in ("bundled-gguf", "gguf"):
        pre = read_string(source.path, "tokenizer.ggml.pre")
        if pre:
            return pre
    return pre_tokenizer_name(tokenizer_json(loaded.tokenizer))


def generation_config(model, loaded: Loaded):
    """The model's generation config with the run's stop tokens (end of turn first) and pad token."""
    from transformers import GenerationConfig

    gen = model.generation_config if getattr(model, "generation_config", None) else GenerationConfig()
    gen = GenerationConfig.from_dict(gen.to_dict())
    gen.eos_token_id = list(loaded.template.stop_ids)
    gen.pad_token_id = loaded.tokenizer.pad_token_id
    return gen


def verify_folder(folder: Path, loaded: Loaded, merged: Merged, dtype: str, tolerance: float | None
                  ) -> tuple[LogitCheck, int]:
    """Re-load `folder` with plain transformers and compare with the unmerged model; check the template."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    plain = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    plain_tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    check = compare(merged.reference, logits_on(plain, plain_tokenizer, merged.prompts))
    within_tolerance(check, dtype, tolerance if tolerance is not None else MAX_TV[dtype], MIN_TOP1_AGREEMENT[dtype],
                     "--dtype fp32")
    stops = GenerationConfig.from_pretrained(folder).eos_token_id
    stops = stops if isinstance(stops, list) else [stops]
    checked = template_check.check_round_trip(loaded.tokenizer, loaded.template, plain_tokenizer, stops,
                                              merged.conversations)
    return check, checked


def verify_gguf(folder: Path, name: str, loaded: Loaded, merged: Merged, quant: str, tolerance: float | None
                ) -> tuple[LogitCheck, int]:
    """Read the GGUF back with transformers' GGUF loader (its own de-quantizer and tokenizer conversion, no
    weitiao code): the same token ids for every sample, logits within tolerance, and the template round trip."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from weitiao.serving.gguf_export import MAX_TV as GGUF_TV
    from weitiao.serving.gguf_export import MIN_TOP1_AGREEMENT as GGUF_TOP1

    plain = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    plain_tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    for text in merged.prompts:
        ours = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
        theirs = plain_tokenizer(text, add_special_tokens=False)["input_ids"]
        if ours != theirs:
            at = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
            raise WeitiaoError(f"export refused: the GGUF's tokenizer splits a sample differently from the run's at "
                               f"token {at}: {text[:120]!r}")
    check = compare(merged.reference, logits_on(plain, plain_tokenizer, merged.prompts))
    within_tolerance(check, quant, tolerance if tolerance is not None else GGUF_TV[quant], GGUF_TOP1[quant],
                     "--quant f16")
    stops = [plain_tokenizer.convert_tokens_to_ids(t) for t in
             loaded.tokenizer.convert_ids_to_tokens(list(loaded.template.stop_ids))]
    checked = template_check.check_round_trip(loaded.tokenizer, loaded.template, plain_tokenizer, stops,
                                              merged.conversations)
    return check, checked


def within_tolerance(check: LogitCheck, kind: str, limit: float, min_top1: float, finer: str) -> None:
    if check.max_total_variation > limit or check.top1_agreement < min_top1:
        raise WeitiaoError(
            f"export refused: the exported {kind} model differs from the unmerged one beyond tolerance: "
            f"{check.describe()} (allowed: max total variation {limit:g}, top-1 agreement at least {min_top1}). "
            f"Export finer ({finer}), or raise --tolerance if this loss is acceptable")


@torch.no_grad()
def logits_on(model, tokenizer, texts: list[str]) -> list[torch.Tensor]:
    """Next-token log-probabilities (T, V) in fp32 for each text, unbatched (no padding effects)."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for text in texts:
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"].to(device)
        out.append(torch.log_softmax(model(input_ids=ids, use_cache=False).logits[0].float(), dim=-1).cpu())
    return out


def compare(reference: list[torch.Tensor], other: list[torch.Tensor]) -> LogitCheck:
    """Position-wise distance between two models' next-token distributions (log-probabilities (T, V) each)."""
    tv = torch.cat([0.5 * (a.exp() - b.exp()).abs().sum(-1) for a, b in zip(reference, other)])
    kl = torch.cat([(a.exp() * (a - b)).sum(-1) for a, b in zip(reference, other)])
    agree = torch.cat([a.argmax(-1) == b.argmax(-1) for a, b in zip(reference, other)])
    return LogitCheck(float(tv.max()), float(tv.mean()), float(kl.mean()), float(agree.float().mean()),
                      int(agree.numel()))


def export_adapter_only(loaded: Loaded, out_dir: Path, log) -> dict:
    """Prefix, prompt and P-tuning: there is no weight delta to merge; ship the adapter with its tokenizer."""
    note = (f"a {loaded.method} adapter adds trained virtual tokens in front of every input; it cannot be merged "
            "into the weights. Load it with peft on top of the base model; decode with weitiao (`weitiao chat`, "
            "`weitiao serve`), because peft's generate() with the KV cache gets these adapters wrong")
    with staged(out_dir) as tmp:
        shutil.copytree(loaded.run_dir / "adapter", tmp, dirs_exist_ok=True)
        loaded.tokenizer.save_pretrained(tmp)
        summary = {"source_run": str(loaded.run_dir.resolve()), "method": loaded.method, "merged": False,
                   "template": loaded.template.describe(), "notes": [note]}
        (tmp / "weitiao_export.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n",
                                                 encoding="utf-8")
    log(f"exported the {loaded.method} adapter to {out_dir} (not merged)\nnote: {note}")
    return summary


@contextlib.contextmanager
def staged(out_dir: Path):
    """Yields a temporary sibling of `out_dir` to fill; on success it replaces `out_dir` (an old folder is removed
    only after the new one is whole; --overwrite was checked by the caller), on any error it is deleted."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp-", dir=out_dir.parent))
    try:
        yield tmp
        if out_dir.exists():
            old = out_dir.with_name(out_dir.name + ".old")
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if disk_full_error(err):
            raise WeitiaoError(f"the disk holding {out_dir.parent} is full ({str(err).strip()[:200]}); nothing was "
                               f"written to {out_dir}. Free some space, or export to another disk with --out") from None
        raise

