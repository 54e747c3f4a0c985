"""Root-cause evaluation: fault-injection scenarios against the demo model server.

Each run starts the real collector, demo server, agent and load generator, injects one
fault at a recorded time (or none), and asks the collector's spike analysis what it saw.
`run.py` is the command line; `harness.py` runs one scenario; `metrics.py` scores them.
tests/scenarios/test_rca_quick.py runs the quick mode under pytest.
"""
