"""Inspect: the message model → :class:`gateway.types.MessageFacts`, and its parts.

Public API::

    inspect(message) -> Inspection        .facts for the policy, .leaves for the transform
    inspect_bytes(data) -> MessageFacts   the same for a message in memory

Pure apart from libmagic and reading the message; never raises on malformed input
(garbage in, facts with what could be found out). Subjects, texts and file names in the
facts are health data: keep them in memory for the policy and the transform, never log
them.
"""

from gateway.inspect.mime import Inspection, Leaf, inspect, inspect_bytes

__all__ = ["Inspection", "Leaf", "inspect", "inspect_bytes"]
