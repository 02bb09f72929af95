"""Encrypted backups and their restore (docs/backup.md)."""
