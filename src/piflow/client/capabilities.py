"""What one PI Web API server offers, learned as a run goes and kept for the rest of it.

Real servers differ from the documentation: an administrator disables ``system/status`` or ``/batch``, a
gateway lacks streamsets, an older version has no stream updates, another implementation caps ``maxCount``
below what was asked without saying so. piflow does not probe everything up front (that costs requests on
every run); each feature is assumed present until the server refuses it, then the fallback is chosen once,
noted in one line, and used for the rest of the run. ``piflow doctor`` probes them all on purpose.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

log = logging.getLogger("piflow.capabilities")

Feature = Literal["system_status", "server_clock", "batch", "streamsets", "links_paging", "max_count_cap"]


@dataclass
class Capabilities:
    """Features as far as known: True (seen working), False (refused: the fallback is in use), None (untried)."""

    system_status: bool | None = None
    batch: bool | None = None
    streamsets: bool | None = None
    server_clock: bool | None = None  # False: the server gives no time, this machine's clock stands in
    # The most values per stream the server returns in one page although more were asked for (None: no cap
    # seen), and the longest page shown complete by a follow-up read (pages up to it need no check).
    max_count_cap: int | None = None
    proven_page: int = 0
    notes: list[str] = field(default_factory=list)

    def fallback(self, feature: Feature, note: str) -> None:
        """Record that ``feature`` is missing and what piflow does instead (logged once per run)."""
        if feature in ("system_status", "batch", "streamsets", "server_clock"):
            setattr(self, feature, False)
        self.note(note)

    def note(self, note: str) -> None:
        """Record a workaround that does not retire a feature (a partial ``/batch`` answer, say), once."""
        if note not in self.notes:
            self.notes.append(note)
            log.warning("%s", note)

    def worked(self, feature: Literal["system_status", "batch", "streamsets"]) -> None:
        if getattr(self, feature) is None:
            setattr(self, feature, True)
