"""Leaf: the name of every event Pli logs, declared once.

The audit trail (``gateway.audit``) and the metrics (``gateway.metrics``) pick events out
of the log by these names, so a name spelt one way where it is logged and another where
it is read would silently lose records or counts. Both read the names from here; the code
that logs may pass the string itself, and a test reads every log call in the package and
fails on a name that is not declared below. A new event is added here first.

Names are dotted, ``<part>.<what happened>``. This module imports nothing.
"""

from __future__ import annotations

# -- the life of a message ---------------------------------------------------------------
POLICY_DECIDED = "policy.decided"
SPOOL_QUEUED = "spool.queued"
SPOOL_RECOVERED = "spool.recovered"
SPOOL_REMOVED = "spool.removed"
SPOOL_STATE_UNSAVED = "spool.state_unsaved"
SPOOL_UNREADABLE = "spool.unreadable"
SPOOL_HELD = "spool.held"
PIPELINE_DISK_FULL = "pipeline.disk_full"
PIPELINE_VAULT_UNAVAILABLE = "pipeline.vault_unavailable"
PIPELINE_HEADER_REFUSED = "pipeline.header_refused"
PIPELINE_UNDO_FAILED = "pipeline.undo_failed"
DELIVERY_SENT = "delivery.sent"
DELIVERY_DEFERRED = "delivery.deferred"
DELIVERY_BOUNCED = "delivery.bounced"
DELIVERY_EXPIRED = "delivery.expired"
DELIVERY_DSN_DROPPED = "delivery.dsn_dropped"
DELIVERY_INTERNAL_ERROR = "delivery.internal_error"
DELIVERY_SCAN_FAILED = "delivery.scan_failed"
DELIVERY_SKIPPED_BUSY = "delivery.skipped_busy"
DELIVERY_WAITING = "delivery.waiting"
DELIVERY_LIMITS_UNSAVED = "delivery.limits_unsaved"
UPSTREAM_RATE_LIMITED = "upstream.rate_limited"
UPSTREAM_TOKEN_REFUSED = "upstream.token_refused"
DSN_QUEUED = "dsn.queued"
DSN_FAILED = "dsn.failed"
QUEUE_FLUSHED = "queue.flushed"

# -- SMTP sessions -----------------------------------------------------------------------
INTAKE_LISTENING = "intake.listening"
SESSION_AUTHENTICATED = "session.authenticated"
SESSION_BARE_NEWLINE = "session.bare_newline"
SESSION_DATA_INTERRUPTED = "session.data_interrupted"
SESSION_DATA_REFUSED = "session.data_refused"
SESSION_RECIPIENT_REFUSED = "session.recipient_refused"
SESSION_TLS_FAILED = "session.tls_failed"
SESSION_AUTH_FAILED = "session.auth_failed"
SESSION_AUTH_LOCKED = "session.auth_locked"
SESSION_DISK_FULL = "session.disk_full"
SESSION_INTERNAL_ERROR = "session.internal_error"
SESSION_LOGIN_TIMEOUT = "session.login_timeout"
SESSION_REFUSED = "session.refused"
SESSION_REFUSED_BUSY = "session.refused_busy"
SESSION_SENDER_REFUSED = "session.sender_refused"

# -- the patient portal and the vault ----------------------------------------------------
PORTAL_LISTENING = "portal.listening"
PORTAL_PAGE = "portal.page"
PORTAL_STATE = "portal.state"
PORTAL_UNAVAILABLE = "portal.unavailable"
PORTAL_BAD_REQUEST = "portal.bad_request"
PORTAL_CODE_ACCEPTED = "portal.code_accepted"
PORTAL_CODE_REJECTED = "portal.code_rejected"
PORTAL_CODE_THROTTLED = "portal.code_throttled"
PORTAL_DOWNLOAD = "portal.download"
PORTAL_AUTOCONFIG = "portal.autoconfig"
PORTAL_OPENED = "portal.opened"
PORTAL_MANAGE = "portal.manage"
PORTAL_REPLY = "portal.reply"
PORTAL_REPLY_REFUSED = "portal.reply_refused"
PORTAL_STORE_UNAVAILABLE = "portal.store_unavailable"
NOTICE_QUEUED = "notice.queued"
NOTICE_FAILED = "notice.failed"
VAULT_PURGED = "vault.purged"
VAULT_PURGE_FAILED = "vault.purge_failed"
VAULT_PURGE_SKIPPED = "vault.purge_skipped"
VAULT_OBJECTS = "vault.objects"
VAULT_OBJECTS_UNAVAILABLE = "vault.objects_unavailable"

# -- the server itself -------------------------------------------------------------------
PLI_READY = "pli.ready"
PLI_STOPPING = "pli.stopping"
PLI_STOPPED = "pli.stopped"
POLICY_RELOADED = "policy.reloaded"
POLICY_RELOAD_FAILED = "policy.reload_failed"
TLS_RELOADED = "tls.reloaded"
TLS_RELOAD_FAILED = "tls.reload_failed"
USERS_RELOAD_FAILED = "users.reload_failed"
METRICS_LISTENING = "metrics.listening"
METRICS_UNAVAILABLE = "metrics.unavailable"
SDNOTIFY_FAILED = "sdnotify.failed"
SDNOTIFY_WATCHDOG_WITHHELD = "sdnotify.watchdog_withheld"
SDNOTIFY_WATCHDOG_RESUMED = "sdnotify.watchdog_resumed"
AUDIT_FILES_EXPIRED = "audit.files_expired"
AUDIT_EXPIRY_FAILED = "audit.expiry_failed"
AUDIT_GAP = "audit.gap"  # written by the trail itself, in place of records it could not keep
AUDIT_UNWRITABLE = "audit.unwritable"
AUDIT_RESUMED = "audit.resumed"
AUDIT_DROPPED_AT_STOP = "audit.dropped_at_stop"
DEMO_PROVIDER_RECEIVED = "demo.provider_received"

# -- admin commands (written to the audit trail by `pli`, not logged by the server) ------
ADMIN_USER_ADDED = "admin.user_added"
ADMIN_USER_REMOVED = "admin.user_removed"
ADMIN_LINK_REVOKED = "admin.link_revoked"
ADMIN_LINK_EXTENDED = "admin.link_extended"
ADMIN_LINKS_PURGED = "admin.links_purged"
ADMIN_QUEUE_DELETED = "admin.queue_deleted"
ADMIN_QUEUE_FLUSHED = "admin.queue_flushed"
ADMIN_QUEUE_RELEASED = "admin.queue_released"

ALL: frozenset[str] = frozenset(
    value for name, value in dict(globals()).items()
    if name.isupper() and name != "ALL" and isinstance(value, str)
)
"""Every declared event name."""
