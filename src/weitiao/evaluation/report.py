"""Base versus tuned (or run A versus run B) on the same test rows: paired deltas with bootstrap intervals, rows
sorted into improved / regressed / unchanged, the forgetting check, and a self-contained HTML page.

Pure functions of what finished runs wrote (predictions.jsonl, metrics.json, trainer_state.json): no model is
loaded here. `weitiao compare` (workflows/compare.py) reads the run folders and calls these.

Intervals are paired percentile bootstraps (Efron & Tibshirani 1993, ch. 13; Koehn 2004, "Statistical
significance tests for machine translation evaluation", for the paired use on test rows): each resample draws n
rows with replacement and takes the same rows for both sides, so the interval is that of the *change*, which is
much narrower than the two sides' own intervals when the rows' difficulty varies more than the change does.
"""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field

import numpy as np

from weitiao.evaluation.metrics import deciding_metric
from weitiao.evaluation.rephrase import MIN_GAP_QUESTIONS, rejected_summary

LOWER_IS_BETTER = {"loss", "perplexity", "squared_error", "absolute_error"}
CHUNK = 256  # resamples drawn at once: CHUNK x n row indices in memory


@dataclass
class Side:
    """One model's results on the compared rows."""
    label: str  # "base", "tuned", or a run's folder name
    outputs: list[str | None]  # the generated answer (or predicted class) per row; None where none was kept
    scores: list[dict]  # per row: metric -> value (higher is better)
    losses: list[tuple[float, int]] | None  # per row: (summed cross-entropy, label tokens), when recorded
    means: dict  # the run's own reported means (metrics.json), for rows or metrics not recorded per row
    general_text: list[tuple[float, int]] | None = None  # the forgetting set, per paragraph (sum, tokens)
    history: list[dict] = field(default_factory=list)  # trainer log_history, for the loss curves


def bootstrap_mean_delta(a: np.ndarray, b: np.ndarray, samples: int, seed: int) -> tuple[float, float, float]:
    """(mean(b - a), low, high): the 95% paired percentile bootstrap interval of the mean change."""
    diff = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if diff.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = []
    for start in range(0, samples, CHUNK):
        idx = rng.integers(0, diff.size, size=(min(CHUNK, samples - start), diff.size))
        means.append(diff[idx].mean(axis=1))
    low, high = np.percentile(np.concatenate(means), [2.5, 97.5])
    return float(diff.mean()), float(low), float(high)


def bootstrap_loss_delta(a: list[tuple[float, int]], b: list[tuple[float, int]], samples: int, seed: int,
                         transform=None) -> tuple[float, float, float]:
    """(loss_b - loss_a, low, high) for token-weighted mean losses: each resample recomputes sum / tokens on the
    resampled rows of both sides, so long rows weigh as much as they do in the reported loss. `transform` maps a
    loss to the compared statistic (np.exp: perplexity)."""
    f = transform or (lambda x: x)
    sa, na = (np.array(x, dtype=np.float64) for x in zip(*a))
    sb, nb = (np.array(x, dtype=np.float64) for x in zip(*b))
    rng = np.random.default_rng(seed)
    deltas = []
    for start in range(0, samples, CHUNK):
        idx = rng.integers(0, sa.size, size=(min(CHUNK, samples - start), sa.size))
        deltas.append(f(sb[idx].sum(1) / np.maximum(nb[idx].sum(1), 1))
                      - f(sa[idx].sum(1) / np.maximum(na[idx].sum(1), 1)))
    low, high = np.percentile(np.concatenate(deltas), [2.5, 97.5])
    return float(f(sb.sum() / max(nb.sum(), 1)) - f(sa.sum() / max(na.sum(), 1))), float(low), float(high)


def perplexity(loss):
    return np.exp(np.minimum(loss, 50.0))


def verdict(name: str, delta: float, low: float, high: float) -> str:
    """`better`, `worse`, `no clear change` (the 95% interval contains 0) or `no interval` (not resampled)."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "no interval"
    if low <= 0 <= high:
        return "no clear change"
    improved = delta < 0 if name in LOWER_IS_BETTER else delta > 0
    return "better" if improved else "worse"


def compare_sides(a: Side, b: Side, rows: list[dict], samples: int = 2000, seed: int = 0) -> dict:
    """The comparison as plain data: per-metric deltas with intervals, row outcomes, forgetting.

    `rows` are the compared test rows ({"prompt", "reference", "where"}), in the order of the sides' lists."""
    n = len(rows)
    metrics = []
    if a.losses and b.losses:
        for name, transform in (("loss", None), ("perplexity", perplexity)):
            delta, low, high = bootstrap_loss_delta(a.losses, b.losses, samples, seed, transform)
            va, vb = (float((transform or float)(mean_of(side.losses))) for side in (a, b))
            metrics.append({"name": name, "a": va, "b": vb, "delta": delta, "low": low, "high": high,
                            "per_row": True})
    else:  # a run from before per-row losses were recorded: the means, without an interval
        for name in ("loss", "perplexity"):
            if name in a.means and name in b.means:
                metrics.append({"name": name, "a": a.means[name], "b": b.means[name],
                                "delta": b.means[name] - a.means[name], "low": float("nan"), "high": float("nan"),
                                "per_row": False})
    names = [k for k in (a.scores[0] if a.scores else {}) if all(k in s for s in a.scores + b.scores)]
    for name in names:
        va = np.array([s[name] for s in a.scores])
        vb = np.array([s[name] for s in b.scores])
        delta, low, high = bootstrap_mean_delta(va, vb, samples, seed)
        metrics.append({"name": name, "a": float(va.mean()), "b": float(vb.mean()), "delta": delta, "low": low,
                        "high": high, "per_row": True, "a_interval": mean_interval(va, samples, seed),
                        "b_interval": mean_interval(vb, samples, seed)})
    for m in metrics:
        m["verdict"] = verdict(m["name"], m["delta"], m["low"], m["high"])

    # rows: the first generation metric decides (the one the config lists first, or its stricter counterpart when
    # that is configured too: list_correct over count_list); with none, the row's loss
    key = deciding_metric(names) if names else ("loss" if a.losses and b.losses else None)
    outcomes = {"improved": [], "regressed": [], "unchanged": []}
    for i, row in enumerate(rows):
        if key is None:
            change = 0.0
        elif key == "loss":
            change = row_loss(a.losses[i]) - row_loss(b.losses[i])  # a fall in loss is an improvement
        else:
            change = b.scores[i][key] - a.scores[i][key]
            change = -change if key in LOWER_IS_BETTER else change
        kind = "improved" if change > 1e-12 else "regressed" if change < -1e-12 else "unchanged"
        outcomes[kind].append({**row, "a": a.outputs[i] if i < len(a.outputs) else None,
                               "b": b.outputs[i] if i < len(b.outputs) else None,
                               "a_scores": a.scores[i] if a.scores else {}, "b_scores": b.scores[i] if b.scores else {},
                               "change": change})
    for kind in outcomes:  # the largest changes first
        outcomes[kind].sort(key=lambda r: -abs(r["change"]))

    forgetting = None
    if a.general_text and b.general_text:
        delta, low, high = bootstrap_loss_delta(a.general_text, b.general_text, samples, seed)
        forgetting = {"paragraphs": len(a.general_text), "tokens": sum(t for _, t in a.general_text),
                      "a": mean_of(a.general_text), "b": mean_of(b.general_text), "delta": delta, "low": low,
                      "high": high, "verdict": verdict("loss", delta, low, high)}
    return {"a": a.label, "b": b.label, "rows": n, "samples": samples, "seed": seed, "decided_by": key,
            "metrics": metrics, "counts": {k: len(v) for k, v in outcomes.items()}, "outcomes": outcomes,
            "forgetting": forgetting}


def mean_interval(values: np.ndarray, samples: int, seed: int) -> list[float]:
    """[low, high]: the 95% percentile bootstrap interval of one side's mean over the rows."""
    _, low, high = bootstrap_mean_delta(np.zeros_like(values), values, samples, seed)
    return [low, high]


def mean_of(rows: list[tuple[float, int]]) -> float:
    return sum(s for s, _ in rows) / max(sum(t for _, t in rows), 1)


def row_loss(row: tuple[float, int]) -> float:
    return row[0] / max(row[1], 1)


def rephrase_gaps(original: list[dict], rephrased: list[list[dict]], samples: int, seed: int) -> list[dict]:
    """Per metric: the mean on the original questions, on their rephrasings, and the gap (rephrased - original)
    with a paired bootstrap interval over questions. `rephrased[i]` holds the scores of question i's rephrasings;
    a question with none is left out. `measured` is false under MIN_GAP_QUESTIONS questions: too few to show."""
    keep = [i for i, r in enumerate(rephrased) if r]
    if not keep:
        return []
    names = [k for k in original[keep[0]] if all(k in original[i] and all(k in s for s in rephrased[i])
                                                  for i in keep)]
    out = []
    for name in names:
        a = np.array([original[i][name] for i in keep])
        b = np.array([np.mean([s[name] for s in rephrased[i]]) for i in keep])
        gap, low, high = bootstrap_mean_delta(a, b, samples, seed)
        out.append({"name": name, "questions": len(keep), "original": float(a.mean()), "rephrased": float(b.mean()),
                    "gap": gap, "low": low, "high": high, "measured": len(keep) >= MIN_GAP_QUESTIONS})
    return out


def rephrased_gaps(rephrased: dict, samples: int = 2000, seed: int = 0) -> list[dict]:
    """`rephrase_gaps` of one `score_rephrased` result (`weitiao eval --rephrase`'s "rephrased" section)."""
    by_row: dict[int, list[dict]] = {}
    for p in rephrased["predictions"]:
        by_row.setdefault(p["row"], []).append(p["scores"])
    original = [o["scores"] for o in rephrased["original"]]
    return rephrase_gaps(original, [by_row.get(i, []) for i in range(len(original))], samples, seed)


def gap_change(first: tuple[list[dict], list[list[dict]]], second: tuple[list[dict], list[list[dict]]],
               samples: int, seed: int) -> list[dict]:
    """How much the rephrasing gap changed from the first model to the second, on the same questions (paired):
    per metric, gap_b - gap_a with its interval; positive means the second model lost less when rephrased."""
    (oa, ra), (ob, rb) = first, second
    keep = [i for i in range(len(oa)) if ra[i] and rb[i]]
    if not keep:
        return []
    names = [k for k in oa[keep[0]] if all(k in oa[i] and k in ob[i] and all(k in s for s in ra[i] + rb[i])
                                           for i in keep)]
    out = []
    for name in names:
        ga = np.array([np.mean([s[name] for s in ra[i]]) - oa[i][name] for i in keep])
        gb = np.array([np.mean([s[name] for s in rb[i]]) - ob[i][name] for i in keep])
        delta, low, high = bootstrap_mean_delta(ga, gb, samples, seed)
        out.append({"name": name, "questions": len(keep), "gap_a": float(ga.mean()), "gap_b": float(gb.mean()),
                    "change": delta, "low": low, "high": high})
    return out


# ---------------------------------------------------------------- charts


def delta_chart(result: dict) -> bytes:
    """PNG: one panel per metric, the change (b - a) as a point with its 95% interval, and the zero line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = result["metrics"]
    fig, axes = plt.subplots(len(metrics), 1, figsize=(7, 0.9 * len(metrics) + 0.8), dpi=100, squeeze=False)
    for ax, m in zip(axes[:, 0], metrics):
        good = m["verdict"] == "better"
        color = "tab:green" if good else "tab:red" if m["verdict"] == "worse" else "tab:gray"
        if np.isfinite(m["low"]):
            ax.plot([m["low"], m["high"]], [0, 0], color=color, linewidth=4, alpha=0.5)
        ax.plot([m["delta"]], [0], "o", color=color)
        ax.axvline(0, color="black", linewidth=0.8)
        span = max(abs(m["delta"]), abs(m["low"]) if np.isfinite(m["low"]) else 0,
                   abs(m["high"]) if np.isfinite(m["high"]) else 0, 1e-3) * 1.3
        ax.set_xlim(-span, span)
        ax.set_yticks([])
        ax.set_ylabel(m["name"], rotation=0, ha="right", va="center")
        ax.grid(axis="x", alpha=0.3)
    axes[0, 0].set_title(f"change {result['b']} - {result['a']} (95% paired bootstrap interval)")
    fig.tight_layout()
    return to_png(fig)


def loss_chart(histories: dict[str, list[dict]]) -> bytes | None:
    """PNG: training and validation loss against the optimizer step, one colour per run (and a GRPO run's mean
    reward, on a second axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not any(histories.values()):
        return None
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:red")
    for (name, history), color in zip(histories.items(), colors):
        train = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
        val = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
        if train:
            ax.plot(*zip(*train), color=color, label=f"{name}: train")
        if val:
            ax.plot(*zip(*val), "o--", color=color, label=f"{name}: validation")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    handles = ax.get_legend_handles_labels()
    # task grpo: the sampled answers' mean reward on its own axis (its "loss" is the clipped policy loss, not
    # a cross-entropy)
    rewards = {name: [(h["step"], h["reward"]) for h in history if "reward" in h and "step" in h]
               for name, history in histories.items()}
    if any(rewards.values()):
        ax.set_ylabel("loss")
        right = ax.twinx()
        for (name, points), color in zip(rewards.items(), colors):
            if points:
                right.plot(*zip(*points), ":", marker=".", color=color, label=f"{name}: mean reward")
        right.set_ylabel("mean reward of the sampled answers")
        more = right.get_legend_handles_labels()
        handles = (handles[0] + more[0], handles[1] + more[1])
    ax.legend(*handles)
    fig.tight_layout()
    return to_png(fig)


def to_png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


# ---------------------------------------------------------------- HTML

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", "Noto Sans", "Noto Sans CJK SC", sans-serif;
       margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; vertical-align: top; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
td.better { background: #e3f4e1; } td.worse { background: #fbe3e1; }
pre { white-space: pre-wrap; margin: 0; font-size: 0.9em; max-width: 30em; }
summary { cursor: pointer; font-weight: 600; margin: 0.5em 0; }
.note { color: #555; font-size: 0.92em; }
.warn { color: #8a4b00; background: #fff4e0; padding: 0.4em 0.6em; }
"""


def fmt(x) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    return f"{x:.4f}"


def signed(x) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{x:+.4f}"


def render_html(result: dict, title: str, facts: list[tuple[str, str]], charts: dict[str, bytes],
                max_rows: int = 200) -> str:
    """One self-contained page: no script, no external stylesheet or font; the charts are inline PNGs."""
    e = html.escape
    a, b = e(result["a"]), e(result["b"])
    out = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>"
           f"<style>{STYLE}</style></head><body>", f"<h1>{e(title)}</h1>"]
    out.append("<table>" + "".join(f"<tr><th class='l'>{e(k)}</th><td class='l'>{e(v)}</td></tr>" for k, v in facts)
               + "</table>")

    out.append(f"<h2>Metrics on {result['rows']} test rows</h2>")
    out.append(f"<table id='metrics'><tr><th class='l'>metric</th><th>{a}</th><th>{b}</th><th>change</th>"
               "<th>95% interval</th><th class='l'>verdict</th></tr>")
    for m in result["metrics"]:
        interval = (f"[{signed(m['low'])}, {signed(m['high'])}]" if np.isfinite(m["low"]) else "-")
        cls = {"better": "better", "worse": "worse"}.get(m["verdict"], "")
        side_a, side_b = (fmt(m[k]) + (f" <small>[{fmt(m[f'{k}_interval'][0])}, {fmt(m[f'{k}_interval'][1])}]"
                                       "</small>" if m.get(f"{k}_interval") else "") for k in ("a", "b"))
        out.append(f"<tr data-metric='{e(m['name'])}'><td class='l'>{e(m['name'])}</td><td>{side_a}</td>"
                   f"<td>{side_b}</td><td class='{cls}'>{signed(m['delta'])}</td><td>{interval}</td>"
                   f"<td class='l {cls}'>{e(m['verdict'])}</td></tr>")
    out.append("</table>")
    out.append(f"<p class='note'>Change = {b} - {a}; under each model's mean, its own 95% interval. Intervals: "
               "paired percentile bootstrap over the test rows "
               f"({result['samples']} resamples, seed {result['seed']}); loss is token-weighted in every resample. "
               "A verdict is given only when the interval excludes zero.</p>")
    if "deltas" in charts:
        out.append(img(charts["deltas"], "metric changes with 95% intervals"))

    out.append("<h2>Forgetting check</h2>")
    f = result["forgetting"]
    if f:
        cls = {"better": "better", "worse": "worse"}.get(f["verdict"], "")
        out.append(f"<table id='forgetting'><tr><th class='l'></th><th>{a}</th><th>{b}</th><th>change</th>"
                   f"<th>95% interval</th><th class='l'>verdict</th></tr><tr><td class='l'>loss on general text "
                   f"({f['paragraphs']} paragraphs, {f['tokens']} tokens)</td><td>{fmt(f['a'])}</td>"
                   f"<td>{fmt(f['b'])}</td><td class='{cls}'>{signed(f['delta'])}</td>"
                   f"<td>[{signed(f['low'])}, {signed(f['high'])}]</td><td class='l {cls}'>{e(f['verdict'])}"
                   "</td></tr></table>")
        out.append("<p class='note'>Loss on a small set of ordinary English and Chinese paragraphs that ships with "
                   "weitiao and that no run trains on. A clearly higher loss after tuning means the model lost "
                   "some general language ability (forgetting); try a lower learning rate, fewer epochs, a "
                   "smaller LoRA rank, or mixing general data into training.</p>")
    else:
        out.append("<p class='note'>Not measured: the run(s) did not record the general-text loss "
                   "(eval.forgetting off, no base scored, or a run made before weitiao measured it).</p>")

    out += rephrase_html(result.get("rephrase"))

    if "losses" in charts:
        out.append("<h2>Training</h2>")
        out.append(img(charts["losses"], "training and validation loss"))

    decided = result["decided_by"]
    out.append(f"<h2>Rows</h2><p class='note'>Sorted by the change in <b>{e(str(decided))}</b> per row, largest "
               f"first; at most {max_rows} rows per group are shown here (all are in report.json).</p>")
    for kind in ("regressed", "improved", "unchanged"):
        rows = result["outcomes"][kind]
        out.append(f"<details{' open' if kind == 'regressed' else ''} id='{kind}'><summary>{kind}: {len(rows)} "
                   "rows</summary>")
        if rows:
            out.append(f"<table><tr><th class='l'>prompt</th><th class='l'>reference</th><th class='l'>{a}</th>"
                       f"<th class='l'>{b}</th><th>change</th></tr>")
            for r in rows[:max_rows]:
                out.append(f"<tr><td class='l'><pre>{e(str(r['prompt']))}</pre></td>"
                           f"<td class='l'><pre>{e(str(r['reference']))}</pre></td>"
                           f"<td class='l'><pre>{e(str(r['a'] if r['a'] is not None else '-'))}</pre></td>"
                           f"<td class='l'><pre>{e(str(r['b'] if r['b'] is not None else '-'))}</pre></td>"
                           f"<td>{signed(r['change'])}</td></tr>")
            out.append("</table>")
        out.append("</details>")
    out.append("</body></html>")
    return "\n".join(out)


def rephrase_html(rephrase: dict | None) -> list[str]:
    """The robustness section: each model's metrics on original vs rephrased questions, and the gap's change."""
    if not rephrase:
        return []
    e = html.escape
    out = ["<h2>Rephrased questions</h2>",
           "<p class='note'>Each test question asked again in other words (<code>weitiao eval RUN --rephrase</code>)"
           ". Gap = rephrased - original, per question, with a paired bootstrap interval over questions.</p>",
           "<table id='rephrased'><tr><th class='l'>model</th><th class='l'>metric</th><th>questions</th>"
           "<th>original</th><th>rephrased</th><th>gap</th><th>95% interval</th></tr>"]
    for label, gaps in rephrase["models"].items():
        for g in gaps:
            gap, interval = ((signed(g["gap"]), f"[{signed(g['low'])}, {signed(g['high'])}]") if g.get("measured", True)
                             else ("not measured", f"fewer than {MIN_GAP_QUESTIONS} questions"))
            out.append(f"<tr data-rephrase='{e(label)}:{e(g['name'])}'><td class='l'>{e(label)}</td>"
                       f"<td class='l'>{e(g['name'])}</td><td>{g['questions']}</td><td>{fmt(g['original'])}</td>"
                       f"<td>{fmt(g['rephrased'])}</td><td>{gap}</td><td>{interval}</td></tr>")
    out.append("</table>")
    out += coverage_html(rephrase.get("coverage") or {})
    out += per_rephrasing_html(rephrase.get("per_rephrasing") or {})
    if rephrase.get("change"):
        out.append("<table id='gap-change'><tr><th class='l'>metric</th><th>questions</th><th>gap A</th>"
                   "<th>gap B</th><th>B - A</th><th>95% interval</th></tr>")
        for c in rephrase["change"]:
            out.append(f"<tr><td class='l'>{e(c['name'])}</td><td>{c['questions']}</td><td>{signed(c['gap_a'])}</td>"
                       f"<td>{signed(c['gap_b'])}</td><td>{signed(c['change'])}</td>"
                       f"<td>[{signed(c['low'])}, {signed(c['high'])}]</td></tr>")
        out.append("</table><p class='note'>B - A above zero: the second model loses less when the question is "
                   "rephrased.</p>")
    return out


def per_rephrasing_html(tables: dict) -> list[str]:
    """Per model: each distinct rephrasing with the text it rewords, its rows and scores beside the same rows'
    original scores, and a warning where the rephrasings of one text disagree sharply."""
    e = html.escape
    out = []
    for label, t in tables.items():
        rows = t.get("by_rephrasing") or []
        if not rows:
            continue
        names = list(rows[0]["scores"])
        out.append(f"<h3>{e(label)}: each rephrasing</h3><table class='per-rephrasing' data-model='{e(label)}'>"
                   "<tr><th class='l'>reworded text</th><th class='l'>rephrasing</th><th>rows</th>"
                   + "".join(f"<th>{e(n)} rephrased</th><th>{e(n)} original</th>" for n in names) + "</tr>")
        for r in rows:
            cells = "".join(f"<td>{fmt(r['scores'][n])}</td><td>{fmt(r['original'].get(n, float('nan')))}</td>"
                            for n in names)
            out.append(f"<tr><td class='l'>{e(r['text'])}</td><td class='l'>{e(r['rephrasing'])}</td>"
                       f"<td>{r['rows']}</td>{cells}</tr>")
        out.append("</table>")
        for d in t.get("disagreements") or []:
            out.append(f"<p class='warn disagreement'>The rephrasings of <q>{e(d['text'])}</q> disagree: "
                       f"{e(d['metric'])} {fmt(d['best_score'])} on <q>{e(d['best'])}</q>, {fmt(d['worst_score'])} "
                       f"on <q>{e(d['worst'])}</q>. The rephrasing, not the model, is the likely cause: read test "
                       f"rows {', '.join(map(str, d['read_rows']))} in rephrased.json.</p>")
    return out


def coverage_html(coverage: dict) -> list[str]:
    """Per model: how many questions got a faithful rephrasing, the rejected candidates by kind, and examples."""
    e = html.escape
    out = []
    for label, c in coverage.items():
        if not c:
            continue
        kinds = e(rejected_summary(c["rejected"]))
        out.append(f"<p class='note' data-coverage='{e(label)}'>{e(label)}: {c['with_rephrasing']} of "
                   f"{c['questions']} questions got a faithful rephrasing ({e(c['target'])} reworded by "
                   f"{e(c['source'])}); rejected candidates: {kinds}.</p>")
        if c["rejected_examples"]:
            out.append("<table class='rejected'><tr><th class='l'>reworded text</th><th class='l'>rejected "
                       "candidate</th><th class='l'>why</th></tr>")
            out += [f"<tr><td class='l'>{e(x['text'])}</td><td class='l'>{e(x['candidate'])}</td>"
                    f"<td class='l'>{e('; '.join(x['problems']))}</td></tr>" for x in c["rejected_examples"][:5]]
            out.append("</table>")
        if c.get("accepted_examples"):  # what was scored: a reader checks that these still ask the same thing
            out.append("<table class='accepted'><tr><th class='l'>reworded text</th><th class='l'>accepted "
                       "rephrasing</th></tr>")
            out += [f"<tr><td class='l'>{e(x['text'])}</td><td class='l'>{e(x['rephrasing'])}</td></tr>"
                    for x in c["accepted_examples"][:5]]
            out.append("</table>")
    return out


def img(png: bytes, alt: str) -> str:
    return f"<p><img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'></p>"
