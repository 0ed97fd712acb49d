"""Job configs that flow tests share."""

from __future__ import annotations


def sentiment_job(name: str, **extra: object) -> dict:
    """The job of configs/review-sentiment.yaml without its gold column and API: classify
    ``data/reviews.csv`` (ids in ``review_id``) into ``data/output/<name>.parquet``.
    ``extra`` adds top-level keys or replaces them whole."""
    return {
        "name": name,
        "kind": "classification",
        "input": {"path": "data/reviews.csv", "id_column": "review_id"},
        "prompt": {
            "system": "You label the sentiment of product reviews.",
            "template": "Is this review positive or negative?\n\n{text}",
        },
        "model": "grok-4",
        "params": {"temperature": 0, "max_tokens": 16},
        "labels": ["positive", "negative"],
        "output": {"path": f"data/output/{name}.parquet"},
        **extra,
    }
