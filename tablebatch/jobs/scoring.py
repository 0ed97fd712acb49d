"""Reading answers: labels out of free text, scores against references, judge verdicts.

Normalisation follows openai/evals: an answer is matched against a fixed set
of choices, and anything that is not clearly one of them goes to an explicit
invalid bucket rather than being guessed.
"""

from __future__ import annotations

import re
import string
import unicodedata

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}“”‘’«»…]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_SPACES = re.compile(r"\s+")


def _plain(text: str) -> str:
    """Lowercase, accents kept, punctuation and markdown as spaces, spaces squeezed."""
    text = unicodedata.normalize("NFKC", text).lower()
    return _SPACES.sub(" ", _PUNCT.sub(" ", text)).strip()


def normalize_label(answer: str | None, labels: list[str]) -> str | None:
    """The label an answer means, or None when it is none of them (or several).

    Accepted: the label itself in any case, with punctuation, quotes or markdown
    around it ("**Positive.**"); a leading label ("positive - the customer…");
    or exactly one label named in the text ("The sentiment is negative").
    """
    if answer is None:
        return None
    plain = _plain(answer)
    if not plain:
        return None
    forms = {label: _plain(label) for label in labels}
    for label, form in forms.items():
        if plain == form:
            return label
    # longest first, so that "very negative" is not read as "negative"
    ordered = sorted(forms.items(), key=lambda kv: -len(kv[1]))
    for label, form in ordered:
        if plain.startswith(form + " "):
            return label
    found: list[str] = []
    remaining = f" {plain} "
    for label, form in ordered:
        if f" {form} " in remaining:
            found.append(label)
            remaining = remaining.replace(f" {form} ", " ")
    return found[0] if len(found) == 1 else None


def normalize_text(text: str) -> str:
    """SQuAD-style normal form: lowercase, no punctuation, no articles, single spaces."""
    return _SPACES.sub(" ", _ARTICLES.sub(" ", _plain(text))).strip()


def score_answer(answer: str | None, reference: str, scoring: str) -> float | None:
    """1.0 or 0.0 for an answer against its reference; None when there is no answer.

    exact: equal after trimming; normalized: equal after ``normalize_text``;
    contains: the normalised reference appears in the normalised answer;
    regex: the reference is a regular expression found in the answer.
    """
    if answer is None:
        return None
    if scoring == "exact":
        return float(answer.strip() == reference.strip())
    if scoring == "normalized":
        return float(normalize_text(answer) == normalize_text(reference))
    if scoring == "contains":
        ref = normalize_text(reference)
        return float(bool(ref) and f" {ref} " in f" {normalize_text(answer)} ")
    if scoring == "regex":
        try:
            return float(re.search(reference, answer, re.IGNORECASE | re.DOTALL) is not None)
        except re.error:
            return None
    raise ValueError(f"unknown scoring {scoring!r}")


def judge_verdict(
    answer: str | None, pass_labels: list[str], fail_labels: list[str]
) -> float | None:
    """1.0 when the judge passes the answer, 0.0 when it fails it, None when unclear."""
    verdict = normalize_label(answer, [*pass_labels, *fail_labels])
    if verdict is None:
        return None
    return 1.0 if verdict in pass_labels else 0.0
