"""Write a deterministic table of N synthetic product reviews, for the scale benchmarks.

What it makes: N rows with columns ``review_id`` ("r0000001", …), ``product``,
``text`` (a review of 20 to 80 words) and ``sentiment`` (``positive`` or
``negative``). Each review is built from sentences of one polarity only (plus
neutral ones, which hold no sentiment word), so its label agrees with its words
(and with the offline backend's lexicon). The same ``--rows`` and ``--seed``
always give the same table, whatever the chunk size.

It builds the table in chunks with NumPy and writes each with pyarrow's
ParquetWriter or CSVWriter, so memory stays low: 1,000,000 rows take a few
seconds.

Run it from the repository root::

    python benchmarks/make_reviews.py --rows 100000 --out /tmp/reviews.parquet
    python benchmarks/make_reviews.py --rows 1000000 --out /tmp/reviews.csv --seed 7
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

CHUNK_ROWS = 100_000
MIN_WORDS = 20
MAX_WORDS = 80
MAX_SENTENCES = 19  # sentences per row at most: every polar and neutral one

PRODUCTS = [
    "blender",
    "coffee grinder",
    "desk lamp",
    "backpack",
    "phone case",
    "electric kettle",
    "vacuum cleaner",
    "toaster",
    "bluetooth speaker",
    "water bottle",
    "air fryer",
    "office chair",
    "rice cooker",
    "hair dryer",
    "yoga mat",
    "monitor stand",
]
OPENINGS = [
    "I bought this {product} for my sister last month.",
    "Ordered the {product} after reading a lot of reviews.",
    "This is my second {product} from this brand.",
    "Got the {product} on sale and used it every day for a few weeks.",
    "I needed a new {product} for the kitchen and picked this one.",
    "We have had this {product} in the office since the spring.",
    "My partner chose this {product} as a birthday gift.",
]
POSITIVE = [
    "It works great and the build quality is solid.",
    "Setup was easy and it has been reliable so far.",
    "The battery lasts all day and charging is fast.",
    "It feels sturdy and looks even better than the photos.",
    "Customer service was friendly and helpful when I had a question.",
    "For the price it is excellent value and I would recommend it.",
    "It is comfortable to use and does exactly what it says.",
    "I love the design.",
    "Everything about it feels like a premium product and I am very pleased.",
    "The whole family enjoyed it from day one.",
    "A fantastic purchase.",
    "It arrived early, packed well, and it is a perfect fit for our needs.",
]
NEGATIVE = [
    "It stopped working after two weeks and I had to return it.",
    "The plastic feels cheap and flimsy and one clip broke on day one.",
    "Shipping was late and the box arrived damaged.",
    "The instructions were wrong and support ignored my emails.",
    "It is slow and the app crashed every time I opened it.",
    "Honestly a waste of money, it is overpriced for what you get.",
    "The size was not as described and it leaks when full.",
    "Terrible experience.",
    "The motor makes an awful grinding noise and the lid is defective.",
    "I am disappointed and have asked for a refund.",
    "Two parts were missing from the box.",
    "It is useless after a few uses.",
]
NEUTRAL = [
    "The color is a bit darker than expected.",
    "It comes with a short cable and a small manual.",
    "My daughter uses it mostly on weekends.",
    "It took about ten minutes to unpack and set up.",
    "The packaging could use less plastic.",
    "It is about the size of a shoebox.",
    "I use it in the morning before work.",
]
CLOSINGS = {
    "positive": ["Five stars.", "Would buy again.", "Highly recommended.", "Great value."],
    "negative": [
        "One star.",
        "Would not buy again.",
        "Avoid this one.",
        "Very disappointed overall.",
    ],
}
NEUTRAL_SHARE = 0.25  # of the sentences after the first body sentence
COLUMNS = ("review_id", "product", "text", "sentiment")
assert len(POSITIVE) == len(NEGATIVE)
assert len(CLOSINGS["positive"]) == len(CLOSINGS["negative"])


def _words(sentences: list[str]) -> np.ndarray:
    return np.array([len(s.split()) for s in sentences], dtype=np.int64)


_POOLS = {"positive": POSITIVE, "negative": NEGATIVE}
_POOL_WORDS = {k: _words(v) for k, v in _POOLS.items()}
_NEUTRAL_WORDS = _words(NEUTRAL)
_OPENINGS_BY_PRODUCT = [[o.format(product=p) for o in OPENINGS] for p in PRODUCTS]
_OPENING_WORDS = np.array(
    [[len(o.split()) for o in row] for row in _OPENINGS_BY_PRODUCT], dtype=np.int64
)
_CLOSING_WORDS = {k: _words(v) for k, v in CLOSINGS.items()}


def make_chunk(start: int, count: int, seed: int, id_width: int) -> pa.Table:
    """Rows ``start`` to ``start + count - 1`` of the table of ``seed``."""
    rng = np.random.default_rng([seed, start])
    product = rng.integers(0, len(PRODUCTS), count)
    opening = rng.integers(0, len(OPENINGS), count)
    positive = rng.random(count) < 0.5
    target = rng.integers(MIN_WORDS, MAX_WORDS + 1, count)
    # each row takes its sentences in a random order of its own, so none repeats
    polar_order = np.argsort(rng.random((count, len(POSITIVE))), axis=1)
    neutral_order = np.argsort(rng.random((count, len(NEUTRAL))), axis=1)
    is_neutral = rng.random((count, MAX_SENTENCES)) < NEUTRAL_SHARE
    is_neutral[:, 0] = False  # every review has at least one sentence of its polarity
    closing = rng.integers(0, len(CLOSINGS["positive"]), count)

    texts: list[str] = []
    labels: list[str] = []
    for i in range(count):
        label = "positive" if positive[i] else "negative"
        pool, pool_words = _POOLS[label], _POOL_WORDS[label]
        first = _OPENINGS_BY_PRODUCT[product[i]][opening[i]]
        parts = [first]
        words = int(_OPENING_WORDS[product[i], opening[i]])
        goal = int(target[i])
        next_polar = next_neutral = 0
        for j in range(MAX_SENTENCES):
            if is_neutral[i, j] and next_neutral < len(NEUTRAL):
                k = neutral_order[i, next_neutral]
                next_neutral += 1
                sentence, n = NEUTRAL[k], int(_NEUTRAL_WORDS[k])
            elif next_polar < len(pool):
                k = polar_order[i, next_polar]
                next_polar += 1
                sentence, n = pool[k], int(pool_words[k])
            else:
                break
            if words + n > MAX_WORDS:
                break
            parts.append(sentence)
            words += n
            if words >= goal:
                break
        c = closing[i]
        if words + _CLOSING_WORDS[label][c] <= MAX_WORDS:
            parts.append(CLOSINGS[label][c])
        texts.append(" ".join(parts))
        labels.append(label)

    ids = [f"r{n:0{id_width}d}" for n in range(start + 1, start + count + 1)]
    return pa.table(
        {
            "review_id": pa.array(ids, pa.string()),
            "product": pa.DictionaryArray.from_arrays(
                pa.array(product, pa.int32()), pa.array(PRODUCTS)
            ).cast(pa.string()),
            "text": pa.array(texts, pa.string()),
            "sentiment": pa.array(labels, pa.string()),
        }
    )


def write_reviews(rows: int, out: str | Path, seed: int = 0) -> Path:
    """Write ``rows`` reviews to ``out`` (``.parquet`` or ``.csv``); returns the path."""
    path = Path(out)
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise ValueError(f"--out must end in .parquet or .csv, not {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    id_width = max(7, len(str(rows)))
    schema = pa.schema([(name, pa.string()) for name in COLUMNS])
    writer: pq.ParquetWriter | pacsv.CSVWriter
    if suffix == ".parquet":
        writer = pq.ParquetWriter(path, schema, compression="zstd")
    else:
        writer = pacsv.CSVWriter(path, schema)
    try:
        # chunks start at multiples of CHUNK_ROWS so that the table depends on the seed only
        for start in range(0, rows, CHUNK_ROWS):
            count = min(CHUNK_ROWS, rows - start)
            writer.write_table(make_chunk(start, count, seed, id_width))
    finally:
        writer.close()
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--rows", type=int, required=True, help="number of reviews")
    p.add_argument("--out", required=True, help="output file, .parquet or .csv")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    args = p.parse_args(argv)
    if args.rows < 1:
        p.error("--rows must be at least 1")
    if Path(args.out).suffix.lower() not in (".parquet", ".csv"):
        p.error("--out must end in .parquet or .csv")
    return args


def main(argv: list[str] | None = None) -> int:
    """Write the table and say how long it took."""
    args = parse_args(argv)
    started = time.perf_counter()
    path = write_reviews(args.rows, args.out, args.seed)
    elapsed = time.perf_counter() - started
    size_mb = path.stat().st_size / 2**20
    print(f"wrote {args.rows} reviews to {path} ({size_mb:.1f} MiB) in {elapsed:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
