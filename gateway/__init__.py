"""Pli: an outbound mail gateway that keeps patients' health data out of their mailboxes."""

__version__ = "0.1.0"
