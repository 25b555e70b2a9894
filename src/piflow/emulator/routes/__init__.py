"""The emulator's FastAPI routes, one module per area of the PI Web API: ``discovery`` (servers, points,
search), ``values`` (streams and streamsets), ``streaming`` (channels and the updates endpoint), ``batch``,
``af`` (assets and event frames) and ``admin`` (``/_emulator``, the test controls)."""
