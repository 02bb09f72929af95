"""Signed webhooks (docs/webhooks.md): endpoints per organisation, Standard Webhooks
payloads with ids and links only, sent at least once from the outbox's deliveries."""
