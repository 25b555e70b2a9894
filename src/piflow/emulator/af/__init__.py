"""The emulator's AF: the asset model (``model``, built from ``catalog``, ``hashing``, ``tree``, ``attribute_defs``,
``templates``, ``records`` and ``search``) and its event frames (``eventframes``)."""
