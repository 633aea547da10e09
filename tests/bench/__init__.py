"""Benchmarks: lateness, throughput, cost per run, scale and recovery, with APScheduler and Celery beat alongside.

`python -m tests.bench` (or `make bench`) runs every scenario against the local RabbitMQ and PostgreSQL and writes
`bench-results/<timestamp>/` (JSON, a Markdown table, a PNG plot). Speed is measured here, never asserted in tests.
"""
