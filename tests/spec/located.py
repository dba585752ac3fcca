"""The harness of the located-error tests, shared by the YAML and DSL mistake tables."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from switchc.errors import Diagnostic, Source, UserError
from switchc.spec import parse_spec


@dataclass(frozen=True)
class Mistake:
    """Spec text, where its first diagnostic must point (1-based, as printed), words of its
    message, and words of its hint where one is promised."""

    name: str
    text: str
    line: int
    column: int
    message: str
    hint: str | None = None


def first_error(source_name: str, text: str, overrides: tuple[str, ...] = ()) -> UserError:
    """The error that parsing `text` (named `source_name`, which picks the format) must raise."""
    with pytest.raises(UserError) as info:
        parse_spec(Source(source_name, text), overrides)
    return info.value


def assert_located(diagnostic: Diagnostic, case: Mistake) -> None:
    assert (diagnostic.span.line, diagnostic.span.column) == (case.line, case.column), diagnostic.render()
    assert case.message in diagnostic.message, diagnostic.render()
    if case.hint is not None:
        assert diagnostic.hint is not None and case.hint in diagnostic.hint, diagnostic.render()
