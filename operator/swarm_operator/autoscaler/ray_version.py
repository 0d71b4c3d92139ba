"""The Ray version a cluster reports, checked against what its spec declares and what the operator's GCS
client is known to work with. Pure (no Ray import): the runner gives it the versions.

Measured (DESIGN.md §4): the operator's GCS client (the Ray wheel it bundles, 2.60) read and drained clusters
of Ray 2.40 and the other way round; the autoscaler state protocol is not promised stable across versions,
so outside that tested span reading and draining may fail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

OLDEST_TESTED = (2, 40)  # the oldest cluster the GCS client was measured against
_MAJOR_MINOR = re.compile(r"^(\d+)\.(\d+)")


@dataclass(frozen=True)
class VersionCheck:
    supported: bool  # within the span the GCS client is known to work with (True when unknown)
    warnings: tuple[str, ...] = ()  # for Warning Events and status.autoscaler.rayVersionWarning


def _major_minor(version: str) -> tuple[int, int] | None:
    m = _MAJOR_MINOR.match(version)
    return (int(m.group(1)), int(m.group(2))) if m else None


def check(declared: str | None, reported: str | None, client: str) -> VersionCheck:
    """`declared`: spec.rayVersion; `reported`: what the head wrote into its GCS; `client`: the operator's Ray."""
    if not reported:
        return VersionCheck(True)
    warnings = []
    if declared and declared != reported:
        warnings.append(f"spec.rayVersion is {declared} but the head runs Ray {reported} (its image decides); "
                        "set rayVersion to the image's Ray version")
    seen, newest = _major_minor(reported), _major_minor(client)
    supported = seen is None or newest is None or OLDEST_TESTED <= seen <= newest
    if not supported:
        span = f"{OLDEST_TESTED[0]}.{OLDEST_TESTED[1]}–{client}"
        warnings.append(f"the cluster runs Ray {reported}; the operator's Ray client ({client}) is known to work "
                        f"with Ray {span}: reading its demand and draining its nodes may fail")
    return VersionCheck(supported, tuple(warnings))
