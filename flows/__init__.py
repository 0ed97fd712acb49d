"""Prefect flows and the ``tablebatch`` command line."""
