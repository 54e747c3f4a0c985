"""Flame graphs drawn: pure functions from a Profile (or a diff of two) to the bytes of
one format. formats.py names the formats, registry.py binds each to its renderer."""
