"""tablebatch: LLM batch jobs over tables.

The core library: the Batch API client (``api``), the local Batch API server
(``server``), and the job logic (``jobs``). It never imports Prefect; the
Prefect tasks and flows live in the top-level ``tasks`` and ``flows`` packages.
"""

__version__ = "0.1.0"
