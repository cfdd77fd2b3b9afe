"""What the page scripts (``pages/``) share: the bootstrap every page runs first, the error guard, the local
worker, experiment labels and picking, queueing from a page, and the Monitor's trial-table section.

Between the pages and the service layer: pages import it, it imports ``nas_service``, ``storage`` and the
engine, and nothing below imports it (``.importlinter``).
"""
