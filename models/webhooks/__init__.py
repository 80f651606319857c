"""Outbound webhooks: endpoints staff register, the durable outbox of deliveries written in
the same transaction as the change they announce, and the worker that sends them."""
