"""Interfaces to the outside systems the real services use (market data, broker, LLM, news feed).

Each module has a small Protocol the handlers depend on and one HTTP implementation configured by environment
variables (`ClientConfig`). Handlers in `SERVICE_MODE=mock` never build any of them.
"""
