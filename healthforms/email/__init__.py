"""Email through the clinic's SMTP server (aiosmtplib); messages never carry PHI."""
