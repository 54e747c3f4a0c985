"""Notifications that carry the cause: spikes found and SLOs burning, sent to webhooks."""
