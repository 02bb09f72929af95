"""The outbox: messages written in the same transaction as what they announce, carried
to workers on a Redis Stream, delivered at least once and sent at most once."""
