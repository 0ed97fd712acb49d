"""The Batch API: its objects (``models``), and the client that speaks it."""
