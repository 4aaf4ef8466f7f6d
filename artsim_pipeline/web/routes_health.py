"""``GET /healthz`` of ``artsim serve`` (an ``APIRouter`` the app includes): is an index served, which
generation, how many paintings, which models, whether image search is ready (``"loading"`` while the models
load in the background), the upload limits and how busy the image-query gate is; 503 (``no_index``) without
an index.
"""

from __future__ import annotations

from typing import Any, Callable

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from .gate import QueryGate
from .served import Served
from .state import EngineHolder


def health_router(holder: EngineHolder, gate: QueryGate, limits: dict[str, Any],
                  served_or_error: Callable[[], Served | JSONResponse],
                  public: Callable[[str], str]) -> APIRouter:
    """``/healthz`` over ``holder``'s engine (see the module doc); ``limits`` are the upload limits."""
    router = APIRouter()

    @router.get("/healthz", summary="Is an index served? Which generation, how many paintings, which models")
    def healthz() -> JSONResponse:
        served = served_or_error()
        if isinstance(served, JSONResponse):
            return JSONResponse({"status": "no_index", "detail": public(holder.error or "no index"),
                                 "hint": "run `artsim run` first"}, status_code=503)
        engine = served.engine
        return JSONResponse({
            "status": "ok", "generation": engine.generation, "paintings": int(len(engine.catalog)),
            "indexed": int(len(engine.variants["full"].ids)), "variants": sorted(engine.variants),
            "models": list(engine.model_names), "reloads": holder.reloads, "limits": limits,
            "image_search": served.image_search,
            **({"image_search_error": public(served.image_search_error)} if served.image_search_error else {}),
            "image_queries": {"running_at_once": gate.running, "queue": gate.waiting, "refused": gate.refused},
        })

    return router


__all__ = ["health_router"]
