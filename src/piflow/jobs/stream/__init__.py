"""``piflow stream``: values as they arrive, committed in small batches, caught up after every gap.

``job`` runs it (the loop, gap fill, commits); ``sources`` reads (channels, the updates endpoint or polling, with
their fallbacks); ``news`` turns messages into rows; ``options`` holds its settings; ``stats`` counts and reports.
"""
