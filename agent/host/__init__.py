"""Process and host pressure: psutil and /proc/pressure read at 1 Hz, turned into readings by a
pure core."""
