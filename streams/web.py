"""The worker's web port serves Eddy's views only, none of Faust's built-in ones.

faust-streaming mounts blueprints of its own on every worker's web server
(``faust.web.base.Web``: ``DEFAULT_BLUEPRINTS``, ``DEBUG_BLUEPRINTS``,
``PRODUCTION_BLUEPRINTS``, ``OPTIONAL_BLUEPRINTS``): ``/table/{name}/{key}/`` answers with
any row of any table, which for Eddy is a user's whole profile; ``/router/`` lists the
cluster's workers and partitions; ``/graph/``, ``/assignment/``, ``/performance/`` and a
``/`` index follow the ``debug`` and ``web_*_enabled`` settings.

``faust_app`` turns every one of those settings off, and ``drop_faust_views`` also empties
the Web's blueprint list, because Faust lets environment variables
(``APP_WEB_TABLES_ENABLED`` ...) override the keyword arguments, and Eddy is configured
through ``EDDY_*`` only. What remains is what
Eddy registers itself: ``/``, ``/api/...`` (``streams.page``), ``/metrics`` and ``/health``.
"""

from __future__ import annotations

import faust
from faust.web.base import BlueprintManager


def drop_faust_views(app: faust.App) -> None:
    """Serve none of Faust's built-in blueprints on ``app``'s web server (call before it
    starts; blueprints added afterwards, and views added with ``app.page``, still work)."""
    app.web.blueprints = BlueprintManager()
