"""What a chat asked the bot for: `/job <verb> ...` read into a `Command`, or a `CommandError` whose message is
the answer. Pure: text in, a value out.

    /job status                 every job at a glance
    /job run <id>               one manual run now
    /job pause <id> [until T] [note]
                                end the job's chain now; the note says why; with `until` (30m, 2h, now+1d, or
                                ISO 8601 read in the job's zone) the job resumes by itself then
    /job resume <id>            start a fresh chain
    /job runs <id> [n]          the job's latest runs

In a group, Telegram appends the bot's name to a command (`/job@scheduler_bot status`): a command addressed to
another bot is not ours and gets no answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from shared.control.instants import later
from shared.names import is_valid_ident

DEFAULT_RUNS = 10
MAX_RUNS = 50
MAX_NOTE = 500  # a pause note is shown by every status; a page of text belongs elsewhere

USAGE = "\n".join(
    [
        "Commands:",
        "/job status - every job: enabled, schedule, last status, failures, running",
        "/job run <id> - run the job now",
        "/job pause <id> [until 2h|ISO time] [note] - pause the job (the note says why; until: it resumes then)",
        "/job resume <id> - resume the job",
        f"/job runs <id> [n] - the job's latest runs (default {DEFAULT_RUNS}, at most {MAX_RUNS})",
    ]
)


class Verb(StrEnum):
    HELP = "help"
    STATUS = "status"
    RUN = "run"
    PAUSE = "pause"
    RESUME = "resume"
    RUNS = "runs"


@dataclass(frozen=True, slots=True)
class Command:
    """One request of a chat: the verb, and the job, note, pause end and run count where the verb takes them.
    `until` is the text as written (a time without an offset is read in the job's zone when carried out)."""

    verb: Verb
    job_id: str | None = None
    note: str | None = None
    limit: int = DEFAULT_RUNS
    until: str | None = None


class CommandError(ValueError):
    """A command the bot cannot read; the message is the whole answer (it ends with the usage)."""


def parse(text: str | None, bot_username: str | None = None) -> Command | None:
    """The command in `text`, None when the text is not a command for this bot (plain chat, another bot's
    command), CommandError when it is ours but cannot be read."""
    if not text or not text.startswith("/"):
        return None
    head, _, rest = text.strip().partition(" ")
    name, _, addressee = head[1:].partition("@")
    if addressee and (bot_username is None or addressee.lower() != bot_username.lower()):
        return None
    name = name.lower()
    if name in {"start", "help"}:
        return Command(Verb.HELP)
    if name != "job":
        raise CommandError(f"Unknown command /{name}.\n{USAGE}")
    return _job_command(rest.strip())


def _job_command(rest: str) -> Command:
    verb_text, _, args = rest.partition(" ")
    verb_text, args = verb_text.lower(), args.strip()
    if not verb_text or verb_text == Verb.HELP:
        return Command(Verb.HELP)
    try:
        verb = Verb(verb_text)
    except ValueError:
        raise CommandError(f"Unknown command /job {verb_text}.\n{USAGE}") from None
    if verb is Verb.STATUS:
        if args:
            raise CommandError(f"/job status takes no arguments.\n{USAGE}")
        return Command(verb)
    job_text, _, tail = args.partition(" ")
    job_id = _job_id(verb, job_text)
    tail = tail.strip()
    if verb is Verb.PAUSE:
        until, tail = _until(tail)
        return Command(verb, job_id, note=_note(tail), until=until)
    if verb is Verb.RUNS:
        return Command(verb, job_id, limit=_limit(tail))
    if tail:
        raise CommandError(f"/job {verb} takes one job id, got {args!r}.\n{USAGE}")
    return Command(verb, job_id)


def _job_id(verb: Verb, text: str) -> str:
    if not text:
        raise CommandError(f"/job {verb} needs a job id.\n{USAGE}")
    if not is_valid_ident(text):
        shown = text if len(text) <= 70 else text[:70] + "..."
        raise CommandError(f"{shown!r} is not a job id (1-63 lowercase letters, digits, '-' or '_').\n{USAGE}")
    return text


def _until(text: str) -> tuple[str | None, str]:
    """`until <time> [note]` at the head of a pause's arguments: the time's text and the rest."""
    word, _, rest = text.partition(" ")
    if word.lower() != "until":
        return None, text
    when, _, rest = rest.strip().partition(" ")
    if not when:
        raise CommandError(f"/job pause <id> until needs a time (30m, 2h, now+1d or ISO 8601).\n{USAGE}")
    try:
        later(when, datetime.now(UTC), "UTC")  # the form only; the job's zone is applied when carried out
    except ValueError as exc:
        raise CommandError(f"/job pause: {exc}.") from None
    return when, rest.strip()


def _note(text: str) -> str | None:
    if len(text) > MAX_NOTE:
        raise CommandError(f"The pause note is {len(text)} characters long; at most {MAX_NOTE}.")
    return text or None


def _limit(text: str) -> int:
    if not text:
        return DEFAULT_RUNS
    if not text.isdigit() or not 1 <= int(text) <= MAX_RUNS:
        raise CommandError(f"/job runs takes a number of runs from 1 to {MAX_RUNS}, got {text!r}.\n{USAGE}")
    return int(text)
