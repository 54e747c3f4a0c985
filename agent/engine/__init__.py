"""The serving engine's own Prometheus metrics (--scrape URL), as canonical series."""
