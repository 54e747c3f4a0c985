"""Target programs the tests profile, written into a test's tmp_path and run by path."""

from __future__ import annotations

# One busy thread in a known function; prints its ready line before it starts.
BUSY = """
def leaf():
    return sum(i * i for i in range(20000))

print("target ready", flush=True)
while True:
    leaf()
"""
