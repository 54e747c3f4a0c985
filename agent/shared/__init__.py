"""The agent's stdlib-only kernel, the one part the collector may import: domain model, errors,
credentials, clock-event reasons."""
