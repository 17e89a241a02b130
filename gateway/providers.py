"""The providers practices use, as `pli init --provider NAME` writes them into pli.toml:
server, port, security, how to log in, the sending limits the provider publishes, and
comments saying what to create at the provider. Only configuration: nothing here talks
to a provider.

Limits are those the providers publish for one mailbox. Where no published figure was
found, the limit is left unset and the comment says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NAMES = ("microsoft365", "google", "ovh", "gandi", "ionos", "orange-pro")


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    host: str | None  # None: the practice gives it (--upstream HOST:PORT)
    port: int
    security: str
    auth: str = "password"
    limits: dict[str, int] = field(default_factory=dict)
    about: str = ""  # comment lines above [[upstream]]: what to create at the provider
    limits_note: str = ""  # comment lines above the limits: where they come from
    next_step: str = ""  # printed by pli init


MICROSOFT365 = Preset(
    "microsoft365", "Microsoft 365 (Exchange Online)", "smtp.office365.com", 587, "starttls",
    auth="xoauth2",
    limits={"max_messages_per_minute": 30, "max_recipients_per_day": 10000},
    about="""\
# Microsoft 365 (Exchange Online), with OAuth2: Microsoft turns Basic authentication (a
# password) off for SMTP AUTH client submission. Once, as the tenant's administrator
# (deploy/README.md walks through it, in French and English):
#   1. Entra admin center > App registrations > New registration ("Pli", accounts in this
#      organizational directory only): note the Application (client) ID and the Directory
#      (tenant) ID.
#   2. API permissions > Add a permission > APIs my organization uses > Office 365
#      Exchange Online > Application permissions > SMTP.SendAsApp; then "Grant admin
#      consent".
#   3. Certificates & secrets > New client secret: its Value goes alone in the file
#      client_secret_file names below (readable by Pli only). Note its expiry date.
#   4. Exchange Online PowerShell (Connect-ExchangeOnline): add the application's service
#      principal, with the Object ID shown under Enterprise applications, then give it the
#      mailbox Pli sends as:
#        New-ServicePrincipal -AppId <client id> -ObjectId <object id>
#        Add-MailboxPermission -Identity <mailbox> -User <object id> -AccessRights FullAccess
#   5. SMTP AUTH allowed for that mailbox:
#        Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled $false
# Then `pli check --upstream` gets a token and logs in, without sending anything.
""",
    limits_note="""\
# Microsoft 365's limits for one mailbox over SMTP AUTH: 3 connections (the [delivery]
# concurrency, 3 by default), 30 messages a minute, 10 000 recipients a day.
""",
    next_step="create the Entra ID application (the comments above [[upstream]] in "
              "pli.toml, or deploy/README.md), fill in username, tenant and client_id, and "
              "put the client secret in {folder}/entra-client-secret (chmod 600)",
)

GOOGLE = Preset(
    "google", "Google Workspace", "smtp.gmail.com", 587, "starttls", auth="xoauth2",
    limits={"max_messages_per_day": 2000, "max_recipients_per_day": 10000,
            "max_recipients_per_message": 100},
    about="""\
# Google Workspace, with OAuth2: a service account with domain-wide delegation (Google
# takes passwords only as app passwords, under 2-step verification). Once, as a super
# administrator of the Workspace (deploy/README.md walks through it, in French and
# English):
#   1. console.cloud.google.com: a project for Pli; IAM & Admin > Service accounts >
#      Create service account ("pli"); note its unique ID (the client ID). Keys > Add key
#      > Create new key > JSON: that file goes where service_account_file says (readable
#      by Pli only).
#   2. admin.google.com > Security > Access and data control > API controls >
#      Domain-wide delegation > Add new: that client ID, with the OAuth scope
#      https://mail.google.com/
# Pli signs its requests with the key, for the mailbox in username. Then `pli check
# --upstream` gets a token and logs in, without sending anything.
""",
    limits_note="""\
# Google Workspace's limits for one user: 2 000 messages and 10 000 recipients a day,
# 100 recipients a message over SMTP.
""",
    next_step="create the service account and its domain-wide delegation (the comments "
              "above [[upstream]] in pli.toml, or deploy/README.md), fill in username, and "
              "put its JSON key in {folder}/google-service-account.json (chmod 600)",
)

PASSWORD_NEXT_STEP = ("fill in username, and put the mailbox's password in "
                      "{folder}/upstream-password (chmod 600)")
"""What is left to do for a provider that takes the mailbox's password."""

OVH = Preset(
    "ovh", "OVHcloud e-mail (MX Plan)", "ssl0.ovh.net", 465, "tls",
    about="""\
# OVHcloud e-mail (MX Plan): ssl0.ovh.net, SSL/TLS on 465 (587 with STARTTLS works too).
# An E-mail Pro or Exchange account at OVHcloud has another server: the one its customer
# area shows (then change host). The login is the full address and its password.
""",
    limits_note="""\
# No sending limits set: OVHcloud publishes none for these accounts in the pages Pli's
# authors could check. Set max_messages_per_minute and the others if your offer has some.
""",
    next_step=PASSWORD_NEXT_STEP,
)

GANDI = Preset(
    "gandi", "Gandi Mail", "mail.gandi.net", 465, "tls",
    limits={"max_recipients_per_message": 40},
    about="""\
# Gandi Mail: mail.gandi.net, SSL/TLS on 465 (587 with STARTTLS works too). The login is
# the full address and its password.
""",
    limits_note="""\
# Gandi takes at most 40 recipients a message. It publishes no per-minute or per-day
# figure Pli could use: those are left unset.
""",
    next_step=PASSWORD_NEXT_STEP,
)

IONOS = Preset(
    "ionos", "IONOS Mail Basic / Mail Business", "smtp.ionos.fr", 587, "starttls",
    limits={"max_recipients_per_message": 200},
    about="""\
# IONOS Mail Basic or Mail Business (France): smtp.ionos.fr, STARTTLS on 587 (465 with
# SSL/TLS works too; smtp.ionos.de, smtp.ionos.com in other countries). The login is the
# full address and its password.
""",
    limits_note="""\
# IONOS takes at most 200 recipients a message (CC and BCC included). Its help page on
# mass mailing limits also caps a Mail Basic or Mail Business mailbox per hour, by the
# age of the contract (50 the first week, more later): Pli has no hourly setting, so a
# very large batch may meet "450 Mail send limit exceeded", which slows the account down.
""",
    next_step=PASSWORD_NEXT_STEP,
)

ORANGE_PRO = Preset(
    "orange-pro", "Orange Pro", None, 465, "tls",
    about="""\
# Orange Pro: the outgoing server of the mailbox is the one the Orange Pro customer area
# gives (pli init --upstream HOST:PORT). smtp.orange.fr is the server of personal Orange
# mailboxes, which Pli refuses. The login is the full address and its password.
""",
    limits_note="""\
# No sending limits set: Orange publishes none for its pro mailboxes in the pages Pli's
# authors could check. Set max_messages_per_minute and the others if your offer has some.
""",
    next_step=PASSWORD_NEXT_STEP,
)

PRESETS = {p.name: p for p in (MICROSOFT365, GOOGLE, OVH, GANDI, IONOS, ORANGE_PRO)}
