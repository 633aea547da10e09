"""Handlers registered by a service: one per work queue (optionally one per job), each with a params model."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from shared.names import check_ident

HandlerFn = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class Handler:
    queue: str
    fn: HandlerFn
    params_model: type[BaseModel] | None
    job_id: str | None

    @property
    def is_async(self) -> bool:
        return asyncio.iscoroutinefunction(self.fn) or inspect.iscoroutinefunction(self.fn)

    def parse_params(self, params: dict[str, Any]) -> Any:
        """Validate merged params with the handler's model (a ValidationError is the caller's to record)."""
        if self.params_model is None:
            return params
        return self.params_model.model_validate(params)


class Registry:
    """What a worker serves: work queue short names and the handlers behind them."""

    def __init__(self) -> None:
        self._by_queue: dict[str, Handler] = {}
        self._by_job: dict[str, Handler] = {}

    def register(
        self, queue: str, fn: HandlerFn, params: type[BaseModel] | None = None, job: str | None = None
    ) -> Handler:
        check_ident(queue, "queue")
        handler = Handler(queue=queue, fn=fn, params_model=params, job_id=job and check_ident(job, "job_id"))
        table, key = (self._by_job, job) if job else (self._by_queue, queue)
        if key in table:
            raise ValueError(f"a handler for {key!r} is already registered")
        table[key] = handler
        return handler

    def handler(
        self, queue: str, params: type[BaseModel] | None = None, job: str | None = None
    ) -> Callable[[HandlerFn], HandlerFn]:
        """Decorator form of `register`: `@worker.handler("buy-scanner", params=ScanParams)`."""

        def decorate(fn: HandlerFn) -> HandlerFn:
            self.register(queue, fn, params, job)
            return fn

        return decorate

    @property
    def queues(self) -> list[str]:
        return sorted({h.queue for h in (*self._by_queue.values(), *self._by_job.values())})

    def resolve(self, job_id: str, queue: str) -> Handler | None:
        return self._by_job.get(job_id) or self._by_queue.get(queue)
