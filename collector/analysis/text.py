"""The spikes answer as the few lines `pyrometer spikes` prints (standard library only).

The CLI is a client of the HTTP API and may run where DuckDB is not installed, so this
reads the JSON answer, not the analysis's values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def to_text(doc: Mapping[str, Any], causes_shown: int = 3) -> str:
    """The JSON answer as a few lines a person reads in ten seconds."""
    lines = [f"{doc['service']}  {doc['from']} .. {doc['to']}  ({doc['percentile']}, step "
             f"{doc['step']}, baseline {doc['baseline']}): {doc['message']}"]
    for spike in doc["spikes"]:
        route = f" {spike['route']}" if spike.get("route") else ""
        where = f" on instance {spike['instance']}" if spike.get("instance") else ""
        lines.append(f"\nspike{route}{where} {spike['start']} .. {spike['end']} (onset "
                     f"{spike['onset']}): {doc['percentile']} {spike['peak_ms']:.1f} ms vs "
                     f"{spike['baseline_ms']:.1f} ms baseline, z {spike['z']:.1f}")
        if spike.get("stages_summary"):
            lines.append(f"  stages: {spike['stages_summary']}")
        judged = spike.get("requests")
        if judged and judged["sampled"]:
            lines.append(f"  judged on a sample of {judged['judged']:,} of {judged['total']:,} "
                         "requests (counts and rates of all)")
        for n, cause in enumerate(spike["causes"][:causes_shown], 1):
            lines.append(f"  {n}. {cause['kind']} {cause['score']:.2f}  {cause['explanation']}")
        if spike["unexplained"]:
            lines.append("  unexplained; checked:")
            lines.extend(f"    - {c['note']}" for c in spike["checked"])
    lines.extend(f"note: {n}" for n in doc.get("notices", []))
    return "\n".join(lines)
