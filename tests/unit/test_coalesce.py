"""Group commit (shared.coalesce): what is asked in one turn of the loop, or while a batch is in flight, goes as one
batch; each caller gets its own answer, or the batch's error; an answer nobody waits for any more is handed over."""

from __future__ import annotations

import asyncio

import pytest

from shared.coalesce import Coalescer


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.in_flight = asyncio.Event()
        self.fail = fail

    async def flush(self, requests: list[int]) -> list[int]:
        self.batches.append(list(requests))
        self.in_flight.set()
        await self.release.wait()
        if self.fail:
            raise RuntimeError("statement failed")
        return [r * 10 for r in requests]


async def test_requests_made_in_one_turn_go_as_one_batch_each_with_its_answer() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.flush)
    assert await asyncio.gather(*(coalescer.submit(i) for i in range(5))) == [0, 10, 20, 30, 40]
    assert recorder.batches == [[0, 1, 2, 3, 4]]
    assert (coalescer.batches, coalescer.submitted) == (1, 5)


async def test_a_lone_request_goes_at_once_and_those_made_meanwhile_go_together_next() -> None:
    recorder = Recorder()
    recorder.release.clear()
    coalescer = Coalescer(recorder.flush)
    first = asyncio.ensure_future(coalescer.submit(1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert recorder.batches == [[1]]  # in flight, not waiting for company
    later = [asyncio.ensure_future(coalescer.submit(i)) for i in (2, 3, 4)]
    await asyncio.sleep(0)
    assert recorder.batches == [[1]]  # one batch at a time
    recorder.release.set()
    assert await first == 10 and await asyncio.gather(*later) == [20, 30, 40]
    assert recorder.batches == [[1], [2, 3, 4]]


async def test_a_batch_that_fails_fails_every_caller_of_it_and_the_next_batch_goes_on() -> None:
    recorder = Recorder(fail=True)
    coalescer = Coalescer(recorder.flush)
    results = await asyncio.gather(*(coalescer.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    recorder.fail = False
    assert await coalescer.submit(7) == 70


async def test_the_batch_size_is_bounded() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.flush, max_batch=2)
    assert await asyncio.gather(*(coalescer.submit(i) for i in range(5))) == [0, 10, 20, 30, 40]
    assert recorder.batches == [[0, 1], [2, 3], [4]]


async def test_an_answer_whose_caller_stopped_waiting_is_handed_over() -> None:
    recorder = Recorder()
    recorder.release.clear()
    orphans: list[tuple[int, int]] = []
    coalescer = Coalescer(recorder.flush, orphaned=lambda req, res: orphans.append((req, res)))
    gone = asyncio.ensure_future(coalescer.submit(1))
    kept = asyncio.ensure_future(coalescer.submit(2))
    await recorder.in_flight.wait()
    gone.cancel()
    recorder.release.set()
    assert await kept == 20
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert orphans == [(1, 10)]


async def test_a_request_alone_in_its_turn_is_sent_from_its_callers_task() -> None:
    """Spread load: no task per batch of one (the flush runs in the caller's task); a request that has company
    still goes in a task of its own."""
    tasks: list[asyncio.Task[object] | None] = []

    async def flush(requests: list[int]) -> list[int]:
        tasks.append(asyncio.current_task())
        return requests

    coalescer = Coalescer(flush)
    caller = asyncio.ensure_future(coalescer.submit(1))
    assert await caller == 1
    assert tasks == [caller]
    assert await asyncio.gather(coalescer.submit(2), coalescer.submit(3)) == [2, 3]
    assert len(tasks) == 2 and tasks[1] is not caller and tasks[1] is not asyncio.current_task()
    assert (coalescer.batches, coalescer.submitted) == (2, 3)


async def test_a_lone_caller_that_stops_waiting_interrupts_its_flush_and_the_next_batch_goes_on() -> None:
    recorder = Recorder()
    recorder.release.clear()
    coalescer = Coalescer(recorder.flush)
    gone = asyncio.ensure_future(coalescer.submit(1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert recorder.batches == [[1]]
    later = asyncio.ensure_future(coalescer.submit(2))  # made while the lone one is in flight
    await asyncio.sleep(0)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    recorder.release.set()
    assert await later == 20
    assert recorder.batches == [[1], [2]]
    assert await coalescer.submit(3) == 30  # idle again


async def test_a_caller_cancelled_while_gathering_its_turn_leaves_the_coalescer_idle() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.flush)
    gone = asyncio.ensure_future(coalescer.submit(1))
    await asyncio.sleep(0)  # it is gathering its turn
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert await coalescer.submit(2) == 20
    assert recorder.batches == [[2]]


async def test_requests_that_may_linger_made_in_separate_turns_go_as_one_batch() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.flush)
    first = asyncio.ensure_future(coalescer.submit(1, linger=0.2))
    await asyncio.sleep(0.02)
    assert recorder.batches == []  # waiting for company
    second = asyncio.ensure_future(coalescer.submit(2, linger=0.2))
    await asyncio.sleep(0.02)
    third = asyncio.ensure_future(coalescer.submit(3, linger=0.2))
    assert await asyncio.gather(first, second, third) == [10, 20, 30]
    assert recorder.batches == [[1, 2, 3]]


async def test_a_lingering_request_alone_goes_by_itself_once_its_linger_is_over() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.flush)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await coalescer.submit(5, linger=0.05) == 50
    assert loop.time() - t0 >= 0.05
    assert recorder.batches == [[5]]


async def test_a_request_that_may_not_wait_sends_the_lingering_batch_at_once() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.flush)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    first = asyncio.ensure_future(coalescer.submit(1, linger=5.0))
    await asyncio.sleep(0.01)
    assert await coalescer.submit(2) == 20
    assert await first == 10
    assert loop.time() - t0 < 1.0
    assert recorder.batches == [[1, 2]]


async def test_a_shorter_linger_brings_the_batch_forward() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.flush)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    first = asyncio.ensure_future(coalescer.submit(1, linger=5.0))
    await asyncio.sleep(0.01)
    assert await coalescer.submit(2, linger=0.05) == 20
    assert await first == 10
    assert 0.05 <= loop.time() - t0 < 1.0
    assert recorder.batches == [[1, 2]]


async def test_a_lingering_batch_goes_once_it_holds_enough() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.flush, enough=3)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    futures = []
    for i in range(3):
        futures.append(asyncio.ensure_future(coalescer.submit(i, linger=5.0)))
        await asyncio.sleep(0.01)
    assert await asyncio.gather(*futures) == [0, 10, 20]
    assert loop.time() - t0 < 1.0
    assert recorder.batches == [[0, 1, 2]]


async def test_a_lingering_first_request_cancelled_leaves_the_others_to_go() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.flush)
    first = asyncio.ensure_future(coalescer.submit(1, linger=5.0))
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(coalescer.submit(2, linger=5.0))
    await asyncio.sleep(0.01)
    first.cancel()
    assert await asyncio.wait_for(second, 1.0) == 20
    assert recorder.batches == [[2]]
    assert await coalescer.submit(3) == 30  # the coalescer is free again
