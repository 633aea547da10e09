"""Reading a chat's text into a bot command: every verb, a command addressed to this bot or another, and the
mistakes a person makes, each answered by one error that ends with the usage."""

from __future__ import annotations

import pytest

from scheduler_seed.server.telegram_commands import MAX_NOTE, Command, CommandError, Verb, parse

BOT = "scheduler_bot"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/job status", Command(Verb.STATUS)),
        ("/job  status ", Command(Verb.STATUS)),
        ("/JOB Status", Command(Verb.STATUS)),
        ("/job run buy-scanner", Command(Verb.RUN, "buy-scanner")),
        ("/job pause buy-scanner", Command(Verb.PAUSE, "buy-scanner")),
        (
            "/job pause buy-scanner broker maintenance 22:00",
            Command(Verb.PAUSE, "buy-scanner", "broker maintenance 22:00"),
        ),
        ("/job pause tick until 2h", Command(Verb.PAUSE, "tick", until="2h")),
        (
            "/job pause tick Until 2026-12-01T08:00 market closed",
            Command(Verb.PAUSE, "tick", "market closed", until="2026-12-01T08:00"),
        ),
        ("/job pause tick untilled ground", Command(Verb.PAUSE, "tick", "untilled ground")),
        ("/job resume price_monitor", Command(Verb.RESUME, "price_monitor")),
        ("/job runs tick", Command(Verb.RUNS, "tick", limit=10)),
        ("/job runs tick 3", Command(Verb.RUNS, "tick", limit=3)),
        ("/job@scheduler_bot status", Command(Verb.STATUS)),
        ("/job@Scheduler_Bot run tick", Command(Verb.RUN, "tick")),
        ("/job", Command(Verb.HELP)),
        ("/job help", Command(Verb.HELP)),
        ("/start", Command(Verb.HELP)),
        ("/help", Command(Verb.HELP)),
    ],
)
def test_each_command_reads_into_its_verb_job_and_arguments(text: str, expected: Command) -> None:
    assert parse(text, BOT) == expected


@pytest.mark.parametrize("text", [None, "", "hello", "job status", "/job@other_bot status", "/job@other_bot"])
def test_text_that_is_not_a_command_for_this_bot_gets_no_answer(text: str | None) -> None:
    assert parse(text, BOT) is None


@pytest.mark.parametrize(
    ("text", "starts"),
    [
        ("/deploy now", "Unknown command /deploy."),
        ("/job frobnicate tick", "Unknown command /job frobnicate."),
        ("/job status now", "/job status takes no arguments."),
        ("/job run", "/job run needs a job id."),
        ("/job run tick tock", "/job run takes one job id, got 'tick tock'."),
        ("/job resume tick now", "/job resume takes one job id"),
        ("/job pause Tick", "'Tick' is not a job id"),
        ("/job run mock.jobs.tick", "'mock.jobs.tick' is not a job id"),
        ("/job runs tick 0", "/job runs takes a number of runs from 1 to 50, got '0'."),
        ("/job runs tick 51", "/job runs takes a number of runs from 1 to 50"),
        ("/job runs tick many", "/job runs takes a number of runs from 1 to 50, got 'many'."),
    ],
)
def test_a_mistake_is_one_error_naming_it_and_ending_with_the_usage(text: str, starts: str) -> None:
    with pytest.raises(CommandError) as caught:
        parse(text, BOT)
    message = str(caught.value)
    assert message.startswith(starts)
    assert message.endswith("(default 10, at most 50)")


def test_a_pause_note_longer_than_the_limit_is_refused() -> None:
    assert parse(f"/job pause tick {'x' * MAX_NOTE}", BOT) == Command(Verb.PAUSE, "tick", "x" * MAX_NOTE)
    with pytest.raises(CommandError, match=f"at most {MAX_NOTE}"):
        parse(f"/job pause tick {'x' * (MAX_NOTE + 1)}", BOT)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("/job pause tick until", "needs a time"),
        ("/job pause tick until tomorrow", "'tomorrow' is not a time"),
        ("/job pause tick until 2h30 late", "'2h30' is not a time"),
    ],
)
def test_a_pause_end_that_is_no_time_is_refused(text: str, says: str) -> None:
    with pytest.raises(CommandError, match=says):
        parse(text, BOT)


def test_a_huge_bad_job_id_is_quoted_clipped() -> None:
    with pytest.raises(CommandError) as caught:
        parse(f"/job run {'X' * 5000}", BOT)
    assert len(str(caught.value).splitlines()[0]) < 200
