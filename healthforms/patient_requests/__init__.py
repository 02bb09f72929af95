"""Requests to a patient: a personal, single-use link to one form (docs/requests.md)."""
