"""Sending one email through the configured SMTP server (aiosmtplib).

TLS is verified against the system's (or HEALTHFORMS_SMTP_CA_FILE's) authorities;
`none` is refused in production (config.py). The password never reaches a log: an
error names its class and SMTP code only.
"""

from __future__ import annotations

import ssl
from email.message import EmailMessage

import aiosmtplib

from healthforms.config import Settings, SmtpSecurity


class MailNotConfigured(RuntimeError):
    """No HEALTHFORMS_SMTP_HOST: mail is not sent (alerts stay in the staff pages)."""


class SmtpMailer:
    def __init__(self, settings: Settings) -> None:
        if not settings.smtp_host:
            raise MailNotConfigured()
        self.settings = settings
        self.sender = settings.smtp_from or f"healthforms@{settings.smtp_host}"

    def _tls_context(self) -> ssl.SSLContext:
        cafile = str(self.settings.smtp_ca_file) if self.settings.smtp_ca_file else None
        return ssl.create_default_context(cafile=cafile)

    async def send(self, message: EmailMessage) -> None:
        """Deliver `message` (its From is set here); raise on any refusal or transport
        failure, so the caller retries."""
        settings = self.settings
        if "From" not in message:
            message["From"] = self.sender
        security = settings.smtp_security
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        await aiosmtplib.send(
            message,
            hostname=settings.smtp_host,
            port=settings.resolved_smtp_port(),
            username=settings.smtp_username,
            password=password,
            use_tls=security is SmtpSecurity.TLS,
            start_tls=security is SmtpSecurity.STARTTLS,
            tls_context=self._tls_context() if security is not SmtpSecurity.NONE else None,
            timeout=settings.smtp_timeout_s,
        )


def describe_failure(exc: BaseException) -> str:
    """What a failure may say in the database and the log: its class and SMTP code,
    never the server's text (which can echo an address)."""
    code = getattr(exc, "code", None)
    return f"{type(exc).__name__} {code}" if isinstance(code, int) else type(exc).__name__
