"""Process memory readings shared by the bench scripts (Linux /proc and getrusage)."""

from __future__ import annotations

import resource


def rss_mb() -> float:
    """Resident memory of this process now, MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def maxrss_mb() -> float:
    """Peak resident memory of this process so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
