"""The gap one rephrasing at a time: each rewording's rows and scores, and the warning when the rewordings of one
text disagree so sharply that the rewording, not the model, is the likely cause (issue 38's 36/36 against 0/37)."""
from __future__ import annotations

from weitiao.evaluation import per_rephrasing
from weitiao.evaluation.report import per_rephrasing_html

TEXT = "Extract the person's name, age, city and job as JSON."


def rephrased(good_rows: int, bad_rows: int) -> dict:
    """Rows 0..n-1 asked as written (all right) and again in two rewordings: one kept every field (right), one
    asked for another key (wrong on every row)."""
    n = good_rows + bad_rows
    original = [{"question": TEXT, "scores": {"exact_match": 1.0}} for _ in range(n)]
    predictions = [{"row": i, "text": TEXT, "rephrasing": "Give the name, age, city and job as JSON.",
                    "scores": {"exact_match": 1.0}} for i in range(good_rows)]
    predictions += [{"row": good_rows + i, "text": TEXT, "rephrasing": 'JSON with the key "getJob".',
                     "scores": {"exact_match": 0.0}} for i in range(bad_rows)]
    return {"original": original, "predictions": predictions}


def test_each_rephrasing_with_its_rows_and_the_disagreement_named():
    result = rephrased(36, 37)
    table = per_rephrasing.by_rephrasing(result)
    assert [(r["rephrasing"], r["rows"], r["scores"]["exact_match"], r["original"]["exact_match"]) for r in table] \
        == [('JSON with the key "getJob".', 37, 0.0, 1.0), ("Give the name, age, city and job as JSON.", 36, 1.0, 1.0)]
    (found,) = per_rephrasing.disagreements(table)
    assert (found["best_score"], found["worst_score"], found["read_rows"]) == (1.0, 0.0, [36, 37, 38, 39, 40])
    result["by_rephrasing"], result["disagreements"] = table, [found]
    lines = "\n".join(per_rephrasing.lines(result))
    assert "36/36 1.000 (original 1.000)  'Give the name, age, city and job as JSON.'" in lines
    assert "0/37 0.000" in lines and "the rephrasing, not the model, is the likely cause" in lines
    html = "\n".join(per_rephrasing_html({"tuned": {"by_rephrasing": table, "disagreements": [found]}}))
    assert "class='per-rephrasing'" in html and "getJob" in html and "class='warn disagreement'" in html


def test_rewordings_that_agree_raise_no_warning_and_few_rows_are_not_judged():
    table = per_rephrasing.by_rephrasing(rephrased(36, 2))  # 2 rows: too few to blame the rewording
    assert per_rephrasing.disagreements(table) == []
    result = rephrased(10, 0)
    assert per_rephrasing.disagreements(per_rephrasing.by_rephrasing(result)) == []
