"""Prefect tasks: one module per pipeline stage, thin over ``tablebatch``."""
