"""``artsim serve``: a web page and a JSON API over the search engine (see :mod:`artsim_pipeline.web.app`)."""

from .app import create_app, serve

__all__ = ["create_app", "serve"]
