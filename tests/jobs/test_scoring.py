"""Reading answers: label normalisation, reference scoring, judge verdicts."""

from __future__ import annotations

import pytest

from tablebatch.jobs.scoring import judge_verdict, normalize_label, normalize_text, score_answer

LABELS = ["positive", "negative", "very negative"]


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        ("positive", "positive"),
        ("Positive", "positive"),
        ("  NEGATIVE.  ", "negative"),
        ("**Positive**", "positive"),
        ('"negative"', "negative"),
        ("positive - the customer is happy", "positive"),
        ("The sentiment is negative.", "negative"),
        ("Very negative!", "very negative"),
        ("I'd say very negative overall", "very negative"),
        ("Label: positive", "positive"),
        ("positive or negative, hard to say", "positive"),  # leads with a label
        ("It is positive, not negative", None),  # names two: invalid, not a guess
        ("neutral", None),
        ("", None),
        (None, None),
        ("positively", None),
    ],
)
def test_normalize_label(answer: str | None, label: str | None) -> None:
    assert normalize_label(answer, LABELS) == label


def test_normalize_text() -> None:
    assert normalize_text("  The Eiffel Tower!  ") == "eiffel tower"
    assert normalize_text("A  cat,\nan apple") == "cat apple"


@pytest.mark.parametrize(
    ("answer", "reference", "scoring", "score"),
    [
        ("Paris", "Paris", "exact", 1.0),
        ("Paris.", "Paris", "exact", 0.0),
        ("Paris.", "paris", "normalized", 1.0),
        ("The answer is Paris", "Paris", "normalized", 0.0),
        ("The answer is Paris", "paris", "contains", 1.0),
        ("Parisian food", "Paris", "contains", 0.0),
        ("It costs 42 dollars", r"\b42\b", "regex", 1.0),
        ("It costs 420 dollars", r"\b42\b", "regex", 0.0),
        ("x", "(unclosed", "regex", None),
        (None, "Paris", "exact", None),
    ],
)
def test_score_answer(answer, reference, scoring, score) -> None:
    assert score_answer(answer, reference, scoring) == score


def test_judge_verdict() -> None:
    assert judge_verdict("Correct.", ["correct"], ["incorrect"]) == 1.0
    assert judge_verdict("incorrect", ["correct"], ["incorrect"]) == 0.0
    assert judge_verdict("The answer is incorrect", ["correct"], ["incorrect"]) == 0.0
    assert judge_verdict("maybe", ["correct"], ["incorrect"]) is None
