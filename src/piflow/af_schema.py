"""The asset-model, event-frame and view schemas under the names the AF jobs import (pure).

``pi_af_elements`` and ``pi_af_attributes`` hold the AF hierarchy, ``pi_event_frames`` and
``pi_event_frame_attributes`` what happened and the values captured for it; all four are merged on ``webid`` and
keep vanished objects as tombstones (``is_deleted``), so history and joins survive deletions. They are described
(with column comments, keys and joins) in :mod:`piflow.tables`; asset views have a schema per template, built by
:func:`view_schema`.
"""

from __future__ import annotations

from piflow import tables
from piflow.tables import TS, view_schema

__all__ = [
    "PI_AF_ATTRIBUTES", "PI_AF_ATTRIBUTES_KEY", "PI_AF_ELEMENTS", "PI_AF_ELEMENTS_KEY", "PI_EVENT_FRAMES",
    "PI_EVENT_FRAMES_KEY", "PI_EVENT_FRAME_ATTRIBUTES", "PI_EVENT_FRAME_ATTRIBUTES_KEY", "TS", "VIEW_BASE",
    "VIEW_KEY", "view_schema",
]

PI_AF_ELEMENTS = tables.PI_AF_ELEMENTS.schema
PI_AF_ELEMENTS_KEY = tables.PI_AF_ELEMENTS.key
PI_AF_ATTRIBUTES = tables.PI_AF_ATTRIBUTES.schema
PI_AF_ATTRIBUTES_KEY = tables.PI_AF_ATTRIBUTES.key
PI_EVENT_FRAMES = tables.PI_EVENT_FRAMES.schema
PI_EVENT_FRAMES_KEY = tables.PI_EVENT_FRAMES.key
PI_EVENT_FRAME_ATTRIBUTES = tables.PI_EVENT_FRAME_ATTRIBUTES.schema
PI_EVENT_FRAME_ATTRIBUTES_KEY = tables.PI_EVENT_FRAME_ATTRIBUTES.key

# An asset view: one row per element and interval, one column per attribute of the template.
VIEW_BASE = tables.VIEW.schema
VIEW_KEY = tables.VIEW.key
