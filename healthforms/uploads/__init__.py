"""Files patients attach to a form (docs/uploads.md)."""
