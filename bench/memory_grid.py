"""Measured peak training memory next to weitiao's estimate, over a grid of models x methods x lengths x batches.

    python bench/memory_grid.py --device cpu  [--out bench/results/memory-cpu.json] [--quick]
    python bench/memory_grid.py --device cuda [--out ...]
    python bench/memory_grid.py --device cpu --precisions bf16 --merge   # add bf16 rows, keep the file's others

On a CPU, bf16 rows run only where bf16 is fast (AMX); each row names the machine it was measured on,
and `--merge` keeps rows measured elsewhere (the fp32 rows of an AVX2 machine, say).

The causal-LM methods that weitiao trains with its fused head-and-loss pass (train.fused_loss: full, freeze, lora,
qlora) use it here too (`"loss": "fused"`, chunks of 1024 positions); prefix and prompt tuning, which do not, use
transformers' loss over the whole logits (`"loss": "full"`), and those rows alone fit the whole-logits constant.

Each setting runs in a fresh process (a process's peak RSS only grows, and a CUDA allocator keeps what earlier
settings left behind), loads the model through weitiao (`load_model`, the method's `load_kwargs` and
`apply_method`), and runs 3 optimizer steps of AdamW on full rows of `seq` tokens under the settings' precision.
Measured: CPU, the process's peak RSS (ru_maxrss) and its RSS before the model was loaded; CUDA, the allocator's
max_memory_allocated and max_memory_reserved. Each row also carries the estimate with the constants in use, so the
printed error is the estimator's error; `bench/fit_memory.py` refits the constants from these files.

Models: the bundled SmolLM2-135M-Instruct (real weights on CPU), and random-weight Llama configs of other shapes
(wide and shallow, small vocabulary; and on CUDA a Llama-3.2-1B shape), so the fit sees hidden, intermediate and
vocabulary sizes vary independently.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOSS_CHUNK = 1024  # train.fused_loss_chunk's default

SHAPES = {  # random-weight Llama shapes (config kwargs)
    "llama-wide-4l": dict(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=4,
                          num_attention_heads=16, num_key_value_heads=4, head_dim=64),
    "llama-1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=8, head_dim=64),
    "llama-1b-v32k": dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=16,
                          num_attention_heads=32, num_key_value_heads=8, head_dim=64),
}


def settings(device: str, quick: bool) -> list[dict]:
    from weitiao.models.precision import cpu_bf16_native

    grid = []
    fused = {"full", "freeze", "lora", "qlora"}
    if device == "cpu":
        models = ["smollm2-135m-instruct", "llama-wide-4l"]
        shapes = [(256, 4), (512, 1)] if quick else [(256, 4), (512, 2), (128, 8)]
        for model in models:
            for method in ("full", "freeze", "lora", "qlora", "prefix", "prompt"):
                for seq, batch in shapes[: 1 if method in ("freeze", "prompt") else None]:
                    grid.append(dict(model=model, method=method, seq=seq, batch=batch, precision="fp32", gc=False))
            grid.append(dict(model=model, method="lora", seq=256, batch=4, precision="fp32", gc=True))
        if cpu_bf16_native():  # without AMX bf16 is slower than fp32 (~100x on AVX2-only CPUs, emulated)
            # bf16 autocast, the default where bf16 is fast: every method, at two token counts (1024 and 512)
            for model in models:
                for method in ("full", "freeze", "lora", "qlora", "prefix", "prompt"):
                    for seq, batch in [(256, 4), (512, 1)][: 1 if method in ("freeze", "prompt") else None]:
                        grid.append(dict(model=model, method=method, seq=seq, batch=batch, precision="bf16",
                                         gc=False))
                grid.append(dict(model=model, method="lora", seq=256, batch=4, precision="bf16", gc=True))
    else:
        for model in ("llama-1b", "llama-1b-v32k", "smollm2-135m-instruct"):
            for method in ("full", "lora", "qlora", "prefix"):
                for seq, batch in ((512, 4), (2048, 2)):
                    grid.append(dict(model=model, method=method, seq=seq, batch=batch, precision="bf16", gc=False))
            grid.append(dict(model=model, method="lora", seq=2048, batch=2, precision="bf16", gc=True))
    # qlora_upcast: method.qlora.upcast_fp32's default (off): the unquantized weights stay in the load dtype
    return [dict(g, loss="fused" if g["method"] in fused else "full", qlora_upcast=False,
                 weights=load_dtype(device, g["method"], g["precision"])) for g in grid]


def load_dtype(device: str, method: str, precision: str) -> str:
    """The dtype the base is loaded in, as model.dtype `auto` resolves it (models.precision.weights_dtype): bf16 on
    a GPU; on a CPU bf16 for LoRA under bf16 autocast (its frozen weights would otherwise be cast in every step),
    else fp32. Stated here rather than asked of weights_dtype, which checks this machine's bf16 support: the fit
    also reads CUDA rows on a CPU."""
    if device == "cuda" or (method == "lora" and precision == "bf16"):
        return "bfloat16"
    return "float32"


def row_weights(row: dict, device: str | None = None) -> str:
    """The dtype a grid row's base was loaded in: its `weights`, or for a row measured before that field existed
    what was loaded then (bf16 on CUDA, fp32 on a CPU)."""
    return row.get("weights") or load_dtype(row.get("device", device), row["method"], "fp32")


def setting_key(row: dict) -> tuple:
    """What makes two grid rows the same setting."""
    return (row["model"], row["method"], row["seq"], row["batch"], row["precision"], row["gc"], row.get("loss"),
            row.get("qlora_upcast", True), row_weights(row))


def model_folder(name: str, work: Path, device: str) -> str:
    """A folder `load_model` can read: the bundled model's cached conversion, or a saved random-weight model."""
    if name == "smollm2-135m-instruct":
        from weitiao.models.loading import local_folder, resolve_source

        if device == "cuda" and (REPO / ".gpu" / "smollm2-config").is_dir():  # no weights travel to a GPU box
            return _random_folder(name, REPO / ".gpu" / "smollm2-config", None, work)
        return local_folder(resolve_source(name))
    return _random_folder(name, None, SHAPES[name], work)


def _random_folder(name: str, config_dir: Path | None, shape: dict | None, work: Path) -> str:
    import torch
    from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM

    folder = work / name
    if (folder / "config.json").is_file():
        return str(folder)
    config = AutoConfig.from_pretrained(config_dir) if config_dir else LlamaConfig(
        max_position_embeddings=4096, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2,
        **shape)
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    return str(folder)


def child(spec: dict) -> dict:
    """Runs in the fresh process: load, apply the method, 3 steps; returns the measurements."""
    import resource

    import torch

    from weitiao.config import MethodConfig
    from weitiao.methods.prefix import PrefixSettings
    from weitiao.methods.prompt import PromptSettings
    from weitiao.methods.qlora import QLoraSettings
    from weitiao.methods import apply_method, count_parameters, load_kwargs
    from weitiao.models.loading import load_model

    device = spec["device"]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    cfg = MethodConfig(name=spec["method"], qlora=QLoraSettings(bits=4), prefix=PrefixSettings(16),
                       prompt=PromptSettings(16))
    dtype = getattr(torch, row_weights(spec))
    model = load_model(spec["folder"], dtype, device, extra=load_kwargs(cfg, device))
    model = apply_method(model, cfg, spec["gc"])
    model.train()  # as the Trainer does: checkpointing (and dropout) are active only in training mode
    if spec["gc"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    trainable, total = count_parameters(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    vocab = model.get_input_embeddings().num_embeddings if hasattr(model, "get_input_embeddings") else 32000
    ids = torch.randint(3, min(vocab, 32000), (spec["batch"], spec["seq"]), device=device)
    amp = torch.bfloat16 if spec["precision"] == "bf16" else None
    fused = None
    if spec.get("loss") == "fused":  # as weitiao's trainer: the model computes no logits, the loss computes them
        from weitiao.training.fused_loss import FusedLinearLoss

        fused = FusedLinearLoss(model, LOSS_CHUNK)
    loaded = torch.cuda.memory_allocated() if device == "cuda" else None
    times = []
    for _ in range(3):
        t0 = time.time()
        with torch.autocast(device, dtype=amp, enabled=amp is not None):
            if fused is not None:
                outputs = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False,
                                logits_to_keep=torch.empty(0, dtype=torch.long, device=device))
                loss = fused(outputs, ids)
            else:
                loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.time() - t0)
    out = {"trainable": trainable, "total": total, "step_s": round(min(times[1:]), 3)}
    if device == "cuda":
        out.update(measured=torch.cuda.max_memory_allocated(), reserved=torch.cuda.max_memory_reserved(),
                   after_load=loaded)
    else:
        out.update(measured=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, rss_before_load=rss_before)
    return out


def run_child(spec: dict, timeout: float | None = None):
    """`child(spec)` in a fresh process; (its measurements, or None when it failed; the finished process)."""
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONWARNINGS="ignore"), timeout=timeout)
    result = next((json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")), None)
    return result, proc


def estimate_for(spec: dict) -> dict:
    from weitiao.memory.estimate import TrainSettings, training_estimate
    from weitiao.memory.shape import load_config_dict, model_shape

    shape = model_shape(load_config_dict(spec["folder"]))
    s = TrainSettings(method=spec["method"], seq=spec["seq"], batch=spec["batch"], precision=spec["precision"],
                      weights_dtype=row_weights(spec),
                      gradient_checkpointing=spec["gc"], device=spec["device"], virtual_tokens=16,
                      loss_chunk=LOSS_CHUNK if spec.get("loss") == "fused" else 0,
                      qlora_upcast=spec.get("qlora_upcast", False))
    return training_estimate(shape, s)


def machine(device: str) -> str:
    import torch

    if device == "cuda":
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    sys.path.insert(0, str(REPO))
    from bench.methods import machine as cpu_machine

    return cpu_machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--out")
    parser.add_argument("--quick", action="store_true", help="fewer settings")
    parser.add_argument("--work", default="/tmp/weitiao-memory-grid")
    parser.add_argument("--models", help="comma-separated subset of the grid's models")
    parser.add_argument("--methods", help="comma-separated subset of the grid's methods")
    parser.add_argument("--precisions", help="comma-separated subset of the grid's precisions (fp32, bf16)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the output file's rows for settings this run does not measure (each row names "
                             "the machine it was measured on)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return 0
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out or REPO / "bench" / "results" / f"memory-{args.device}.json")
    grid = [g for g in settings(args.device, args.quick)
            if (not args.models or g["model"] in args.models.split(","))
            and (not args.methods or g["method"] in args.methods.split(","))
            and (not args.precisions or g["precision"] in args.precisions.split(","))]
    kept = []
    if args.merge and out.is_file():
        previous = json.loads(out.read_text())
        measuring = {setting_key(g) for g in grid}
        kept = [dict(r, machine=r.get("machine", previous.get("machine"))) for r in previous["rows"]
                if setting_key(r) not in measuring]
    here = machine(args.device)
    rows = []
    for spec in grid:
        spec = dict(spec, device=args.device, folder=model_folder(spec["model"], work, args.device))
        t0 = time.time()
        result, proc = run_child(spec)
        row = {k: v for k, v in spec.items() if k != "folder"} | {"machine": here}
        if result is None:
            row["error"] = (proc.stderr.strip().splitlines() or ["failed"])[-1][:300]
        else:
            est = estimate_for(spec)
            row.update(result, estimate=est["total"], breakdown=est,
                       error_pct=round(100 * (est["total"] - result["measured"]) / result["measured"], 1))
        row["wall_s"] = round(time.time() - t0, 1)
        rows.append(row)
        print(f"{row['model']:22} {row['method']:7} seq {row['seq']:5} x{row['batch']:<2} {row['precision']} "
              f"gc={int(row['gc'])} loss={row.get('loss', 'full'):5}  "
              f"measured {row.get('measured', 0) / 2**30:6.2f} GiB  estimate "
              f"{row.get('estimate', 0) / 2**30:6.2f} GiB  error {row.get('error_pct', 'n/a')}%"
              + (f"  [{row['error']}]" if "error" in row else ""), flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"device": args.device, "machine": here, "date": time.strftime("%Y-%m-%d"),
                                   "rows": kept + rows}, indent=2) + "\n")
    worst = max((abs(r["error_pct"]) for r in rows if "error_pct" in r), default=None)
    print(f"worst error {worst}% over {sum('error_pct' in r for r in rows)} settings; written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
