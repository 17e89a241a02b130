"""structlog set-up: JSON lines on stdout (journald keeps them), readable when on a terminal.

Events carry queue ids, addresses, sizes and SMTP codes; callers never pass subjects,
bodies, file names, codes or secrets. Event names are dotted (``session.auth_failed``,
``spool.queued``, ``delivery.deferred``) and declared in ``gateway.events``.

The level chooses what reaches the journal, nothing else: the audit trail and the metrics
see every event before the level is applied, so a quieter log never drops an audit record
or a count.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping, Sequence
from typing import Any

import structlog
from structlog.typing import Processor

from gateway.audit import AuditTrail


def configure(*, json: bool | None = None, level: int = logging.INFO,
              audit: AuditTrail | None = None,
              observers: Sequence[Processor] = ()) -> None:
    """``audit`` receives the events its schema names (see ``gateway.audit``);
    ``observers`` see every event (metrics) and must return it unchanged. Both come
    before ``level``, which only decides what is written to stdout."""
    if json is None:
        json = not sys.stdout.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            *([_to_audit(audit)] if audit is not None else []),
            *observers,
            _at_least(level),
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _event_first,
            renderer,
        ],
        # Every call reaches the processors: the level is applied after the audit feed.
        wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=False,
    )
    # Libraries log through stdlib logging; keep their chatter out unless it is a warning.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")
    logging.getLogger("mail.log").setLevel(logging.ERROR)


def _to_audit(trail: AuditTrail) -> Processor:
    def processor(_: Any, __: str,
                  event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        try:
            trail.record(str(event_dict.get("event")), **event_dict)
        except OSError as exc:  # the audit file must not take the gateway down
            print(f"pli: cannot write the audit trail: {exc.strerror}", file=sys.stderr)
        return event_dict
    return processor


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "warn": logging.WARNING, "error": logging.ERROR, "exception": logging.ERROR,
           "critical": logging.CRITICAL}


def _at_least(level: int) -> Processor:
    """Drop, from the journal only, events below ``level``."""
    def processor(_: Any, method_name: str,
                  event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if _LEVELS.get(method_name, logging.INFO) < level:
            raise structlog.DropEvent
        return event_dict
    return processor


def _event_first(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    """Put ``event`` first so lines read well and log filters (fail2ban) match simply."""
    event = event_dict.pop("event", None)
    return {"event": event, **event_dict}


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
