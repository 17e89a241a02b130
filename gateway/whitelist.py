"""``pli lists update``: download the national MSSanté whitelist and put it in the
policy's list, only once it has been checked to be the whitelist.

The download goes over HTTPS with the server's certificate checked (against
``[mssante_whitelist] ca_file`` when set, the system's CAs otherwise), is bounded in
size and time, and is read with :func:`gateway.policy.mssante.parse_whitelist` before
anything is replaced: a failed download, an error page or a truncated file leaves the
list as it was.
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from pathlib import Path

from gateway import __version__
from gateway.config import Whitelist
from gateway.errors import ConfigError
from gateway.policy.lists import ImportSummary, import_data
from gateway.policy.mssante import NotAWhitelist, parse_whitelist

MAX_BYTES = 32 * 1024 * 1024  # the list is about 350 kB


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"[mssante_whitelist] ca_file {ca_file}: cannot be read as CA "
                          f"certificates: {getattr(exc, 'strerror', None) or exc}") from None


def download(settings: Whitelist) -> bytes:
    """The bytes at ``settings.url``; ConfigError in words when they cannot be had."""
    request = urllib.request.Request(settings.url, headers={"User-Agent": f"pli/{__version__}"})
    context = tls_context(settings.ca_file)
    try:
        with urllib.request.urlopen(request, timeout=settings.timeout,
                                    context=context) as answer:
            data: bytes = answer.read(MAX_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise ConfigError(f"{settings.url}: the server answered {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ssl.SSLCertVerificationError):
            hint = (" (set [mssante_whitelist] ca_file to the IGC-Santé CA certificates if "
                    "the server's chain is not among the system's)")
            raise ConfigError(f"{settings.url}: the server's certificate is not trusted: "
                              f"{reason.verify_message}{hint}") from None
        raise ConfigError(f"{settings.url}: cannot download: {reason}") from None
    except (TimeoutError, OSError) as exc:
        raise ConfigError(f"{settings.url}: cannot download: {exc}") from None
    if len(data) > MAX_BYTES:
        raise ConfigError(f"{settings.url}: more than {MAX_BYTES // 2**20} MiB, which the "
                          "whitelist never is; nothing was replaced")
    return data


def update(settings: Whitelist, dest: Path) -> ImportSummary:
    """Download the whitelist and replace the entries of the list file ``dest``."""
    data = download(settings)
    try:
        parse_whitelist(data)
    except NotAWhitelist as exc:
        raise ConfigError(f"{settings.url}: what was downloaded is not the MSSanté whitelist: "
                          f"{exc}; {dest} was left as it was") from None
    return import_data(data, settings.url, dest)
