"""Durable queue on disk and the delivery worker that empties it."""
