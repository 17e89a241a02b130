"""Thunderbird autoconfig: the outgoing server is Pli, filled in by Thunderbird itself.

Thunderbird looks for ``https://autoconfig.<domain>/mail/config-v1.1.xml`` and
``https://<domain>/.well-known/autoconfig/mail/config-v1.1.xml`` (adding
``?emailaddress=<address>``) when an account is created. The format is the "clientConfig
1.1" file described at https://wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat.

Why there is an incoming server in a file about sending: Thunderbird's reader
(``readFromXML`` in its account-creation code) refuses the whole file unless it holds a
``<domain>`` and at least one valid ``<incomingServer>`` (type, host name, port, socket
type, user name, authentication); an outgoing server alone gives "Need proper
<incomingServer> in XML file". Pli carries no mail in, so the incoming entry names the
practice's mail provider, where the mailbox really is: the host given to
:func:`autoconfig_xml`, or else the host of the first upstream account (providers such
as OVH, Gandi or Infomaniak serve IMAP on the same name as SMTP), with IMAP over TLS on
port 993 and the address as user name. Thunderbird tests it before saving; if the guess
is wrong the user corrects that one line on the manual set-up screen.
"""

from __future__ import annotations

import re
from xml.sax.saxutils import escape

from gateway.config import Settings

_HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*",
    re.ASCII,
)

IMAPS_PORT = 993


def is_hostname(text: str) -> bool:
    return bool(_HOSTNAME.fullmatch(text.lower()))


def email_domain(address: str | None) -> str | None:
    """The domain of the ``emailaddress`` Thunderbird sends, when it is a plain host name."""
    if not address or "@" not in address:
        return None
    domain = address.rpartition("@")[2].strip().lower()
    return domain if is_hostname(domain) else None


def autoconfig_xml(settings: Settings, domain: str | None = None,
                   incoming_host: str | None = None) -> str:
    domain = domain if domain and is_hostname(domain) else _default_domain(settings)
    incoming = incoming_host or settings.upstream[0].host
    e = escape
    outgoing = []
    # Thunderbird uses the first entry that works and keeps the others as alternatives.
    # Submission with STARTTLS comes first, as in the client guides (deploy/clients/);
    # Pli refuses AUTH before STARTTLS, and Thunderbird's "STARTTLS" means always-STARTTLS,
    # so the password is never sent in clear on either port.
    if settings.submission.enabled:
        outgoing.append(_outgoing(settings.hostname, settings.submission.port, "STARTTLS"))
    if settings.submissions.enabled:
        outgoing.append(_outgoing(settings.hostname, settings.submissions.port, "SSL"))
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<clientConfig version="1.1">
  <emailProvider id="{e(domain)}">
    <domain>{e(domain)}</domain>
    <displayName>{e(settings.practice.name)}</displayName>
    <displayShortName>{e(settings.practice.name)}</displayShortName>
    <!-- Thunderbird refuses a file without an incoming server. Pli only sends, so this
         is the mailbox at the practice's provider (IMAP over TLS, login = the address);
         correct it on Thunderbird's manual set-up screen if the provider differs. -->
    <incomingServer type="imap">
      <hostname>{e(incoming)}</hostname>
      <port>{IMAPS_PORT}</port>
      <socketType>SSL</socketType>
      <username>%EMAILADDRESS%</username>
      <authentication>password-cleartext</authentication>
    </incomingServer>
    <!-- Sending goes through Pli. Pli users log in with their Pli user name (the NAME of
         `pli user add NAME`), not with their address, so the user name offered is the
         address's local part: name Pli users after it ("dr.martin" for
         dr.martin@...) and nothing needs typing; otherwise correct the user name in
         Thunderbird. The password is sent inside TLS only (SSL or STARTTLS). -->
{"".join(outgoing)}  </emailProvider>
</clientConfig>
"""


def _outgoing(hostname: str, port: int, socket_type: str) -> str:
    return f"""    <outgoingServer type="smtp">
      <hostname>{escape(hostname)}</hostname>
      <port>{port}</port>
      <socketType>{socket_type}</socketType>
      <username>%EMAILLOCALPART%</username>
      <authentication>password-cleartext</authentication>
    </outgoingServer>
"""


def _default_domain(settings: Settings) -> str:
    """Without an address to go by: the domain Pli's own host name sits in."""
    labels = settings.hostname.lower().split(".")
    parent = ".".join(labels[1:]) if len(labels) > 2 else settings.hostname.lower()
    return parent if is_hostname(parent) else "localdomain"
