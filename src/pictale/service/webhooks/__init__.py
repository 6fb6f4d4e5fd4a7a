"""Webhooks: who may be called (urls), how a delivery is signed and sent (sender), and the pending deliveries
that survive a restart (outbox)."""
