"""The HTML pages: files under ``templates/`` (HTML) and ``static/`` (CSS, JavaScript), no build step.

A template's ``{{name}}`` placeholders are filled with HTML-escaped values (:func:`render`); the
pages' scripts and styles are static files, so the server's Content-Security-Policy allows no inline
script or style. Every page talks to the JSON API.
"""

from __future__ import annotations

import functools
import html
from pathlib import Path

import swagger_ui

WEB_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = WEB_DIR / "templates"
STATIC_DIR = WEB_DIR / "static"


@functools.lru_cache(maxsize=None)
def _template(name: str) -> str:
    return (TEMPLATES_DIR / f"{name}.html").read_text(encoding="utf-8")


def render(name: str, **values: object) -> str:
    """The template ``templates/<name>.html`` with each ``{{key}}`` replaced by ``values[key]``, escaped."""
    page = _template(name)
    for key, value in values.items():
        page = page.replace("{{" + key + "}}", html.escape(str(value), quote=True))
    return page


def swagger_ui_dir() -> Path:
    """Swagger UI 5's files (it reads FastAPI's OpenAPI 3.1), from the ``swagger-ui-py`` package's
    ``static/`` folder; served at ``/static/swagger-ui``, so ``/docs`` needs no network."""
    return Path(swagger_ui.__file__).resolve().parent / "static"
