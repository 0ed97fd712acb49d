"""Job logic: config schema, request building, answer parsing, joining, metrics."""
