"""Simulators: clients that behave like phones, for tests, demos, load and soak.

The phone simulator (``callrec phone``), the load generator (``callrec loadtest``,
``benchmarks/ingest.py``) and the start/stream/stop churn of the soak runs. Nothing in the
server imports this package.
"""
