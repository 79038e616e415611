"""Fit the memory estimator's constants from measured grids and show each setting's error.

    python bench/fit_memory.py [--device cpu|cuda ...] [--write]

Reads bench/results/memory-<device>.json (from bench/memory_grid.py). The estimate is linear in the constants once
the exactly known parts (weights as stored, trainable parameters with gradients and optimizer states) are taken off
the measurement, so they are fitted by non-negative least squares (scipy.optimize.nnls), minimising the relative
error (each row is weighted by 1 / measured). With --write the constants go into
src/weitiao/memory/constants.json together with the data file, the date and the worst error.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

from weitiao.memory.estimate import (  # noqa: E402
    CONSTANTS_FILE, DTYPE_BYTES, TrainSettings, activation_family, training_estimate,
)
from weitiao.memory.shape import model_shape  # noqa: E402

LOSS_CHUNK = 1024  # bench/memory_grid.py's chunk for rows with `"loss": "fused"`
# rows without a `qlora_upcast` field were measured before weitiao stopped casting QLoRA's unquantized weights to
# fp32 (peft's prepare_model_for_kbit_training did, on every run): they carry that upcast

FAMILIES = ["full", "lora", "qlora", "qlora_upcast", "prefix", "prompt"]
DONORS = {"qlora_upcast": ("qlora", "lora"), "prompt": ("prefix", "lora", "full")}  # for a family not measured


def shape_of(row: dict, cache: dict):
    from bench.memory_grid import SHAPES

    name = row["model"]
    if name not in cache:
        if name in SHAPES:
            config = dict(model_type="llama", tie_word_embeddings=True, **SHAPES[name])
        else:  # the bundled SmolLM2 (its config; on a GPU box the same config drove random weights)
            from weitiao.memory.shape import load_config_dict

            config = load_config_dict(name)
        cache[name] = model_shape(config)
    return cache[name]


def row_settings(r: dict, device: str) -> TrainSettings:
    """The estimator's settings for one measured grid row."""
    from bench.memory_grid import row_weights

    return TrainSettings(method=r["method"], seq=r["seq"], batch=r["batch"], precision=r["precision"],
                         weights_dtype=row_weights(r, device),
                         gradient_checkpointing=r["gc"],
                         device=device, virtual_tokens=16, loss_chunk=LOSS_CHUNK if r.get("loss") == "fused" else 0,
                         qlora_upcast=r.get("qlora_upcast", True))


def family_key(s: TrainSettings) -> str:
    """The constants a row fits: its family's, or on a CPU under bf16 the family's at bf16."""
    family = activation_family(s)
    return f"{family}@{s.precision}" if s.device == "cpu" and s.precision != "fp32" else family


def fit(device: str) -> tuple[dict, list]:
    data = json.loads((REPO / "bench" / "results" / f"memory-{device}.json").read_text())
    rows = [r for r in data["rows"] if "measured" in r and "invalid" not in r]
    shapes: dict = {}
    settings = [row_settings(r, device) for r in rows]
    # on a CPU, bf16 autocast rows fit their own constants (`lora@bf16`, see estimate.layer_constants)
    families = FAMILIES + sorted({family_key(s) for s in settings} - set(FAMILIES))
    zero = {"layers": {f: [0.0, 0.0] for f in families}, "logits": 0.0, "overhead": 0, "checkpointing": 0.0}
    features, targets, known = [], [], []
    for r, s in zip(rows, settings):
        shape = shape_of(r, shapes)
        fixed = training_estimate(shape, s, zero)["total"]  # with the fused loss, its chunk's buffers too
        tokens, act = r["seq"] * r["batch"], DTYPE_BYTES[r["precision"]] / 2
        layers = min(2, shape.layers) if r["method"] == "freeze" else shape.layers
        x = np.zeros(2 * len(families) + 3)
        k = families.index(family_key(s))
        # with checkpointing only one layer's activations are alive at a time (plus the kept layer inputs)
        depth = 1 if r["gc"] else layers
        x[2 * k] = tokens * depth * shape.hidden * act
        x[2 * k + 1] = tokens * depth * shape.intermediate * act
        x[-3] = tokens * layers * shape.hidden * act if r["gc"] else 0  # what checkpointing's recomputation leaves
        x[-2] = 0 if r.get("loss") == "fused" else tokens * shape.vocab  # whole logits: rows without the fused loss
        x[-1] = 1.0
        features.append(x)
        targets.append(r["measured"] - fixed)
        known.append((r, s, shape))
    X, y = np.array(features), np.array(targets)
    w = 1.0 / np.array([r["measured"] for r, _, _ in known])
    constants = solve(X, y, w, families, {family_key(s) for _, s, _ in known})
    report = []
    for i, (r, s, shape) in enumerate(known):
        est = training_estimate(shape, s, constants)["total"]
        # leave-one-out: the constants fitted without this row, so the error of a setting the fit has not seen
        keep = np.arange(len(known)) != i
        held_out = solve(X[keep], y[keep], w[keep], families, {family_key(k[1]) for k in known if k is not known[i]})
        loo = training_estimate(shape, s, held_out)["total"]
        report.append((r, est, 100 * (est - r["measured"]) / r["measured"],
                       100 * (loo - r["measured"]) / r["measured"]))
    return constants, report


def solve(X, y, w, families: list[str], seen: set[str]) -> dict:
    """Non-negative least squares of the relative error; a family without rows borrows a measured one's."""
    from scipy.optimize import nnls

    coef, _ = nnls(X * w[:, None], y * w)
    constants = {"layers": {f: [round(float(coef[2 * i]), 3), round(float(coef[2 * i + 1]), 3)]
                            for i, f in enumerate(families)},
                 "checkpointing": round(float(coef[-3]), 3), "logits": round(float(coef[-2]), 3),
                 "overhead": int(coef[-1])}
    for family in families:  # no measurement: the closest family's (prompt tuning ~ prefix tuning; bf16 ~ fp32)
        if family not in seen:
            base = family.split("@")[0]
            donors = [base] if "@" in family else DONORS.get(family, ("prefix", "lora", "full"))
            donor = next(f for f in donors if f in seen)
            constants["layers"][family] = list(constants["layers"][donor])
            constants.setdefault("borrowed", {})[family] = donor
    return constants


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", action="append", choices=["cpu", "cuda"])
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--readme", action="store_true", help="also put the error tables into docs/guides/memory.md")
    args = parser.parse_args(argv)
    all_constants = json.loads(CONSTANTS_FILE.read_text())
    fitted = args.device or ["cpu"]
    # the docs block holds every device's table: the others are refitted from their own grids, not written
    shown = [d for d in ("cpu", "cuda") if d in fitted or (REPO / "bench" / "results" / f"memory-{d}.json").is_file()]
    tables = []
    for device in shown:
        constants, report = fit(device)
        data = json.loads((REPO / "bench" / "results" / f"memory-{device}.json").read_text())
        measured = "peak RSS of the process" if device == "cpu" else "torch.cuda.max_memory_allocated"
        machines = "; ".join(dict.fromkeys(r.get("machine", data.get("machine", device)) for r, *_ in report))
        lines = [f"**{device}** ({machines}; measured: {measured}; "
                 f"`bench/memory_grid.py --device {device}`, fitted by `bench/fit_memory.py`)", "",
                 "| model | method | seq x batch | precision | checkpointing | loss | measured | estimate | error "
                 "| left out |",
                 "|---|---|---|---|---|---|---:|---:|---:|---:|"]
        for r, est, err, loo in report:
            method = r["method"] + (" (fp32 upcast)" if activation_family(row_settings(r, device)) == "qlora_upcast"
                                    else "")
            lines.append(f"| {r['model']} | {method} | {r['seq']} x {r['batch']} | {r['precision']} | "
                         f"{'on' if r['gc'] else 'off'} | {r.get('loss', 'full')} | {r['measured'] / 2**30:.2f} GiB | "
                         f"{est / 2**30:.2f} GiB | {err:+.1f}% | {loo:+.1f}% |")
        tables.append("\n".join(lines))
        if device not in fitted:
            continue
        print(f"== {device}: {json.dumps(constants)}")
        print(f"{'model':22} {'method':7} {'seq':>5} {'b':>2} prec gc  measured  estimate  error  left out")
        for r, est, err, loo in report:
            print(f"{r['model']:22} {r['method']:7} {r['seq']:5} {r['batch']:2} {r['precision']:4} {int(r['gc'])}  "
                  f"{r['measured'] / 2**30:7.2f}G {est / 2**30:8.2f}G {err:+6.1f}% {loo:+8.1f}%")
        worst = max(abs(e) for _, _, e, _ in report)
        worst_loo = max(abs(e) for *_, e in report)
        print(f"worst error {worst:.1f}% over {len(report)} settings; {worst_loo:.1f}% with each left out of the fit")
        constants["fit"] = (f"bench/fit_memory.py on bench/results/memory-{device}.json, {time.strftime('%Y-%m-%d')}: "
                            f"{len(report)} settings, worst error {worst:.1f}% ({worst_loo:.1f}% with each setting "
                            "left out of the fit)")
        # keeps what other scripts fit into the device's section (bench/fsdp_memory.py: fsdp_retained)
        all_constants[device] = {**all_constants.get(device, {}), **constants}
    if args.readme:
        import re

        start, end = "<!-- memory-calibration:start -->", "<!-- memory-calibration:end -->"
        readme = REPO / "docs" / "guides" / "memory.md"
        text = "\n\n".join(tables)
        readme.write_text(re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: f"{start}\n{text}\n{end}",
                                 readme.read_text(), flags=re.S))
        print("docs/guides/memory.md memory tables updated")
    if args.write:
        CONSTANTS_FILE.write_text(json.dumps(all_constants, indent=2) + "\n")
        print(f"wrote {CONSTANTS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
