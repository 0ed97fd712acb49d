"""``tablebatch run`` keeps pyarrow from importing pandas; Python code still can."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
from flows.cli.common import arrow_without_pandas
arrow_without_pandas()
import pyarrow as pa
import pyarrow.compute as pc
assert pc.fill_null(pa.array(["x", None]), "").to_pylist() == ["x", ""]
assert pa.scalar("x").as_py() == "x" and pa.array([b"y"], pa.binary())[0].as_py() == b"y"
print("after pyarrow:", "pandas" in sys.modules)
import pandas
print("import pandas:", pandas.DataFrame is not None)
print("to_pandas:", pa.table({"a": [1]}).to_pandas()["a"].tolist())
"""


def test_pyarrow_converts_without_pandas_and_code_still_imports_it() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "after pyarrow: False",
        "import pandas: True",
        "to_pandas: [1]",
    ]
