"""The process being profiled: found by pid or regex, followed across restarts, its version
changes noticed."""
