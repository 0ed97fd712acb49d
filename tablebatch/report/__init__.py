"""HTML reports of finished runs, charts for Prefect artifacts, and runs compared side by side.

Built from a run's report JSON and its output table only (no API call); no Prefect here.
Per-kind parts live in ``tablebatch.report.kinds``, one module per kind.
"""
