from __future__ import annotations

import pytest

from weitiao.evaluation.metrics import count_list, exact_match, parse_numbered_list, score

REF3 = "1. Apple\n2. Pear\n3. Plum"


@pytest.mark.parametrize("prediction,expected", [
    ("1. Kiwi\n2. Fig\n3. Lime", 1.0),
    ("  1. Kiwi\n2. Fig\n3. Lime\n", 1.0),
    ("1. Kiwi\n2. Fig", 0.0),                              # wrong count
    ("1. Kiwi\n2. Fig\n3. Lime\n4. Pear", 0.0),
    ("Here are 3 fruits:\n1. Kiwi\n2. Fig\n3. Lime", 0.0),  # preamble
    ("1. Kiwi\n3. Fig\n4. Lime", 0.0),                     # skipped number
    ("1) Kiwi\n2) Fig\n3) Lime", 0.0),                     # other format
    ("1. Kiwi\n\n2. Fig\n3. Lime", 0.0),                   # blank line inside
    ("", 0.0),
])
def test_count_list(prediction, expected):
    assert count_list(prediction, REF3) == expected


def test_parse_and_exact_match_and_score():
    assert parse_numbered_list(REF3) == ["Apple", "Pear", "Plum"]
    assert exact_match(" a  b ", "a b") == 1.0 and exact_match("a", "b") == 0.0
    means, rows = score(["count_list", "exact_match"], [REF3, "no"], [REF3, REF3])
    assert means == {"count_list": 0.5, "exact_match": 0.5}
    assert rows[1] == {"count_list": 0.0, "exact_match": 0.0}
    with pytest.raises(ValueError):
        count_list(REF3, "not a list")
