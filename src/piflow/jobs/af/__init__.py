"""The jobs that read PI AF: the asset model (``job``: ``piflow af``), event frames (``events``) and asset views
(``views``: ``piflow view``).

``databases`` lists and selects AF databases, ``read`` reads one database, ``rows`` turns it into table rows.
"""
