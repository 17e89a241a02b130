"""structlog set-up: JSON lines on stdout (journald keeps them), readable when on a terminal.

Events carry queue ids, addresses, sizes and SMTP codes; callers never pass subjects,
bodies, file names, codes or secrets. Event names are dotted: ``session.auth_failed``,
``spool.queued``, ``delivery.deferred``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


def configure(*, json: bool | None = None, level: int = logging.INFO) -> None:
    if json is None:
        json = not sys.stdout.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _event_first,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=False,
    )
    # Libraries log through stdlib logging; keep their chatter out unless it is a warning.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")
    logging.getLogger("mail.log").setLevel(logging.ERROR)


def _event_first(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Put ``event`` first so lines read well and log filters (fail2ban) match simply."""
    event = event_dict.pop("event", None)
    return {"event": event, **event_dict}


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
