"""The emails healthforms sends. Staff alerts carry no PHI: no answers, no patient names,
no confirmation codes; a link and the form's title at most (a form title is the clinic's
own text, e.g. "New patient intake"). Emails to a patient carry their own link or their
own confirmation code, never an answer and never the form's title."""

from __future__ import annotations

import hashlib
from datetime import datetime
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


def request_link(
    *,
    to: str,
    clinic: str,
    link: str,
    expires_at: datetime,
    delivery_id: str,
    domain: str,
) -> EmailMessage:
    """A patient's personal link to a form. The form is not named: its title can say what
    the visit is about to whoever reads the inbox."""
    message = _patient_message(to, f"{_one_line(clinic)} has sent you a form", delivery_id, domain)
    message.set_content(
        f"{_one_line(clinic)} asks you to fill in a form before your visit.\n\n"
        f"Open it here (the link is for you alone and works once):\n{link}\n\n"
        f"The link works until {expires_at.strftime('%B %d, %Y')}. If you did not expect "
        "this email, you can ignore it.\n"
    )
    return message


def draft_link(
    *,
    to: str,
    clinic: str,
    link: str,
    expires_at: datetime,
    delivery_id: str,
    domain: str,
) -> EmailMessage:
    """The link to a patient's saved draft, which they asked for. The form is not named,
    and none of the answers are in it."""
    message = _patient_message(to, f"Your saved form from {_one_line(clinic)}", delivery_id, domain)
    message.set_content(
        f"You saved a form from {_one_line(clinic)} to finish later.\n\n"
        f"Continue it here, on any device:\n{link}\n\n"
        f"The link works until {expires_at.strftime('%B %d, %Y %H:%M UTC')}. Anyone with "
        "the link can see your answers: do not forward this email. If you did not save a "
        "form, you can ignore it.\n"
    )
    return message


def receipt(
    *, to: str, clinic: str, confirmation: str, delivery_id: str, domain: str
) -> EmailMessage:
    """After the patient sent the form: the confirmation code, nothing they answered."""
    message = _patient_message(to, f"{_one_line(clinic)} received your form", delivery_id, domain)
    message.set_content(
        f"{_one_line(clinic)} received the form you sent.\n\n"
        f"Your confirmation code: {confirmation}\n\n"
        "Keep it in case the clinic asks for it. For your privacy this email holds none of "
        "your answers.\n"
    )
    return message


def _patient_message(to: str, subject: str, delivery_id: str, domain: str) -> EmailMessage:
    message = EmailMessage()
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = message_id(delivery_id, domain)
    message["Auto-Submitted"] = "auto-generated"
    return message


def _one_line(text: str) -> str:
    """No header injection through a title: one line, bounded."""
    return " ".join(text.split())[:150]
