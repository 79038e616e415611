"""The rephrased gap, one rephrasing at a time: each distinct rewording with its text, its rows and its score.

A gap is the mean over every rephrasing of every question. When one rewording asks another question (a field
dropped, a key renamed), its rows score 0 whatever the model learned, and the mean hides it. So every result of
`eval --rephrase` also lists each rewording with the original text it rewords, how many rows asked it, and each
metric on those rows beside the same rows' original score; and where the rewordings of one text disagree sharply
(36/36 against 0/37), it says that the rewording, not the model, is the likely cause, and which rows to read.
"""
from __future__ import annotations

from collections import defaultdict

from weitiao.evaluation.metrics import deciding_metric

# two rewordings of one text whose scores differ by at least this much, each on MIN_ROWS rows or more, disagree
DISAGREEMENT = 0.5
MIN_ROWS = 3


def by_rephrasing(rephrased: dict) -> list[dict]:
    """One record per distinct (text, rephrasing): its rows, each metric's mean on them, and the same rows' mean
    on the original question. `rephrased` is a `score_rephrased` result whose predictions name their rewording."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for p in rephrased.get("predictions", []):
        if "rephrasing" in p:
            groups[(p["text"], p["rephrasing"])].append(p)
    original = rephrased.get("original") or []
    out = []
    for (text, rephrasing), preds in groups.items():
        names = list(preds[0]["scores"])
        out.append({"text": text, "rephrasing": rephrasing, "rows": len(preds),
                    "row_ids": [p["row"] for p in preds],
                    "scores": {n: sum(p["scores"][n] for p in preds) / len(preds) for n in names},
                    "original": {n: sum(original[p["row"]]["scores"].get(n, 0.0) for p in preds) / len(preds)
                                 for n in names if p_rows_have(original, preds, n)}})
    return sorted(out, key=lambda r: (r["text"], -r["rows"], r["rephrasing"]))


def p_rows_have(original: list[dict], preds: list[dict], name: str) -> bool:
    return all(p["row"] < len(original) and name in original[p["row"]]["scores"] for p in preds)


def disagreements(table: list[dict]) -> list[dict]:
    """Texts whose rewordings' scores (on the deciding metric) differ by DISAGREEMENT or more: the worst one is
    likely another question. Each names the best and worst rewording and the first rows of the worst to read."""
    if not table:
        return []
    metric = deciding_metric(list(table[0]["scores"]))
    by_text: dict[str, list[dict]] = defaultdict(list)
    for r in table:
        if r["rows"] >= MIN_ROWS:
            by_text[r["text"]].append(r)
    out = []
    for text, rows in by_text.items():
        best = max(rows, key=lambda r: r["scores"][metric])
        worst = min(rows, key=lambda r: r["scores"][metric])
        if best["scores"][metric] - worst["scores"][metric] >= DISAGREEMENT:
            out.append({"text": text, "metric": metric, "best": best["rephrasing"], "best_score":
                        best["scores"][metric], "worst": worst["rephrasing"], "worst_score": worst["scores"][metric],
                        "read_rows": worst["row_ids"][:5]})
    return out


def lines(rephrased: dict, limit: int = 12) -> list[str]:
    """The terminal's view: each rewording's rows and score, then each disagreement."""
    table = rephrased.get("by_rephrasing") or []
    if not table:
        return []
    metric = deciding_metric(list(table[0]["scores"]))
    out = [f"  per rephrasing ({metric}: rephrased vs the same rows asked as written):"]
    for r in table[:limit]:
        right = round(r["scores"][metric] * r["rows"])
        before = r["original"].get(metric)
        out.append(f"    {right}/{r['rows']} {r['scores'][metric]:.3f}"
                   + (f" (original {before:.3f})" if before is not None else "") + f"  {r['rephrasing']!r}")
    if len(table) > limit:
        out.append(f"    ... {len(table) - limit} more in rephrased.json (by_rephrasing)")
    for d in rephrased.get("disagreements") or []:
        out.append(f"  warning: the rephrasings of {d['text']!r} disagree ({d['metric']} {d['best_score']:.3f} on "
                   f"{d['best']!r}, {d['worst_score']:.3f} on {d['worst']!r}): the rephrasing, not the model, is the "
                   f"likely cause; read test rows {', '.join(map(str, d['read_rows']))} in rephrased.json")
    return out
