"""Transform: a message and a ``protect`` decision → the emails that actually leave.

Public API::

    Protector(vault, settings, template_dirs, tag_names).protect(
        content, mail_from, recipients, how) -> Protected

``Protected.outgoing`` holds the notice for the recipients (and, when Pli made the
access code, the receipt for the sender); ``Protected.link_id`` names the vault link,
for the pipeline to discard if the message is not queued after all.
"""

from gateway.transform.protect import Protected, Protector

__all__ = ["Protected", "Protector"]
