"""Job labels and label selectors (Kubernetes style): pure parsing and matching, no I/O.

A definition may carry `labels = { team = "billing", tier = "batch" }`. A selector picks jobs by them:

    team=billing            the label is there with that value (`==` works too)
    team!=billing           the label is absent or has another value
    team                    the label is there (any value)
    !team                   the label is absent
    team=billing,tier!=web  every term holds (comma = AND)

Keys and values: 1-63 characters (a value may be empty), letters, digits, '-', '_', '.', beginning and ending
with a letter or digit. A selector that does not read this way is refused with one error naming the term.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

MAX_LABELS = 32
_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")
_OPS = ("==", "!=", "=")


class SelectorError(ValueError):
    """A selector that does not parse: the message names the term and what is wrong."""


def _check_key(key: object, where: str) -> str:
    if not isinstance(key, str) or not _NAME.match(key):
        raise ValueError(
            f"{where}: label key {key!r} is not valid (1-63 letters, digits, '-', '_' or '.', "
            "beginning and ending with a letter or digit)"
        )
    return key


def _check_value(value: object, where: str) -> str:
    if not isinstance(value, str) or (value and not _NAME.match(value)):
        raise ValueError(
            f"{where}: label value {value!r} is not valid (a string of 0-63 letters, digits, '-', '_' or '.', "
            "beginning and ending with a letter or digit)"
        )
    return value


def validate_labels(labels: Mapping[str, object]) -> dict[str, str]:
    """`labels` checked (ValueError naming the first bad key or value), keys sorted."""
    if len(labels) > MAX_LABELS:
        raise ValueError(f"labels: at most {MAX_LABELS} labels, got {len(labels)}")
    return {_check_key(k, "labels"): _check_value(labels[k], f"labels.{k}") for k in sorted(labels)}


@dataclass(frozen=True, slots=True)
class Requirement:
    """One term of a selector. `op`: "=" (equal), "!=" (absent or other), "exists", "!exists"."""

    key: str
    op: str
    value: str = ""

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!exists":
            return self.key not in labels
        if self.op == "=":
            return labels.get(self.key) == self.value
        return labels.get(self.key) != self.value

    def __str__(self) -> str:
        if self.op == "exists":
            return self.key
        if self.op == "!exists":
            return f"!{self.key}"
        return f"{self.key}{self.op}{self.value}"


@dataclass(frozen=True, slots=True)
class Selector:
    """Every requirement must hold."""

    requirements: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def _term(term: str, text: str) -> Requirement:
    where = f"selector {text!r}: term {term!r}"
    if not term:
        raise SelectorError(f"selector {text!r}: an empty term (two commas, or one at an end)")
    for op in _OPS:
        key, found, value = term.partition(op)
        if found:
            try:
                checked = _check_key(key.strip(), where), _check_value(value.strip(), where)
                return Requirement(checked[0], "=" if op == "==" else op, checked[1])
            except ValueError as exc:
                raise SelectorError(str(exc)) from None
    negated = term.startswith("!")
    try:
        key = _check_key(term[1:].strip() if negated else term, where)
    except ValueError as exc:
        raise SelectorError(f"{exc}; a term is k=v, k!=v, k or !k") from None
    return Requirement(key, "!exists" if negated else "exists")


def parse_selector(text: str) -> Selector:
    """A selector from its text (see the module doc); SelectorError naming the bad term."""
    if not isinstance(text, str) or not text.strip():
        raise SelectorError("selector is empty: give terms such as team=billing or team=billing,tier!=web")
    return Selector(tuple(_term(term.strip(), text) for term in text.split(",")))
