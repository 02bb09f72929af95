"""The emails healthforms sends. They never carry PHI: no answers, no patient names,
no confirmation codes of another person; a link and the form's title at most (a form
title is the clinic's own text, e.g. "New patient intake")."""

from __future__ import annotations

import hashlib
from email.message import EmailMessage
from email.utils import formatdate


def message_id(delivery_id: str, domain: str) -> str:
    """The Message-ID of a delivery: the same on every attempt, so a copy sent again
    after a worker died mid-send is recognisably the same message."""
    digest = hashlib.sha256(delivery_id.encode()).hexdigest()[:40]
    return f"<{digest}@{domain}>"


def response_alert(
    *, to: str, form_title: str, link: str, delivery_id: str, domain: str
) -> EmailMessage:
    """ "A new response to <form title>": sign in to read it."""
    message = EmailMessage()
    message["To"] = to
    message["Subject"] = f"A new response to {_one_line(form_title)}"
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = message_id(delivery_id, domain)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(
        f'A patient sent a new response to "{_one_line(form_title)}".\n\n'
        f"Sign in to read it:\n{link}\n\n"
        "For the patient's privacy this email holds no answers or names.\n"
        "You receive it because you asked to be alerted about this form; turn alerts "
        "off on the form's responses page.\n"
    )
    return message


def _one_line(text: str) -> str:
    """No header injection through a title: one line, bounded."""
    return " ".join(text.split())[:150]
