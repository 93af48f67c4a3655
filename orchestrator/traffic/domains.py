"""Names to registrable domains, and the operator's advertising/tracking list.

The registrable domain ("eTLD+1") comes from the public suffix list that the `publicsuffixlist`
package ships: nothing is fetched, so two analyses of one capture agree. A tracker list is a text
file the operator supplies, one domain a line; hosts files (`0.0.0.0 ads.example.com`) and
Adblock-style lines (`||ads.example.com^`) are read too, comments (`#`, `!`) skipped. A name is
flagged when it or any domain above it is listed.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from publicsuffixlist import PublicSuffixList

from orchestrator.core.config_files import UnreadableFile, read_limited

#: A tracker list is read within this size (the large public lists hold about 3 MB).
MAX_LIST_BYTES = 64 * 2**20
HOSTS_LINE = re.compile(r"^(?:0\.0\.0\.0|127\.0\.0\.1|::1?)\s+(\S+)")
ADBLOCK_LINE = re.compile(r"^\|\|([^\^/$*]+)\^?(?:\$.*)?$")
DOMAIN = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$")


@lru_cache(maxsize=1)
def _suffixes() -> PublicSuffixList:
    return PublicSuffixList()


def registrable_domain(name: str | None) -> str | None:
    """`device-metrics-us.amazon.com` -> `amazon.com`; a bare public suffix or an address gives None."""
    if not name:
        return None
    name = name.rstrip(".").lower()
    if not DOMAIN.match(name) or name.replace(".", "").isdigit():
        return None
    found: str | None = _suffixes().privatesuffix(name)
    return found


class TrackerListError(ValueError):
    """A tracker list that cannot be read; names the file and the line."""


def load_tracker_list(path: Path) -> frozenset[str]:
    """The domains of an operator's advertising/tracking list."""
    try:
        text = read_limited(path, MAX_LIST_BYTES).decode("utf-8", "replace")
    except UnreadableFile as exc:
        raise TrackerListError(str(exc)) from None
    domains = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip().lower()
        if not line or line[0] in "#!":
            continue
        line = line.split("#", 1)[0].strip()
        for pattern in (HOSTS_LINE, ADBLOCK_LINE):
            if match := pattern.match(line):
                line = match.group(1)
                break
        if not DOMAIN.match(line):
            raise TrackerListError(f"{path}:{number}: {raw.strip()[:80]!r} is not a domain name, a hosts-file "
                                   "line or an Adblock `||domain^` line")
        domains.add(line)
    return frozenset(domains)


def is_tracker(name: str | None, listed: frozenset[str]) -> bool:
    """The name or a domain above it is listed."""
    if not name:
        return False
    labels = name.rstrip(".").lower().split(".")
    return any(".".join(labels[i:]) in listed for i in range(len(labels)))
