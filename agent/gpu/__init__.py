"""GPU telemetry through NVML (or a recorded replay): where readings come from and the loop that
samples them."""
