"""Inspect: message bytes → :class:`gateway.types.MessageFacts`.

Public API::

    inspect_message(content: bytes) -> MessageFacts
    parse(content) -> Message | None; inspect_parsed(message, size) -> MessageFacts
        the same in two steps, so that a caller parses a large message only once

Pure apart from libmagic; never raises on malformed input (garbage in, facts with what
could be found out). Subjects, texts and file names in the facts are health data: keep them
in memory for the policy and the transform, never log them.
"""

from gateway.inspect.mime import inspect_message, inspect_parsed, parse

__all__ = ["inspect_message", "inspect_parsed", "parse"]
