"""Shipping to the collector: encoder, one gRPC stream in order until acked, outbox, on-disk
spool, telemetry buffer."""
