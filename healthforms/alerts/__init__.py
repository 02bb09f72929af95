"""Alerts to staff about new responses: in their pages, and by email when SMTP is set."""
