"""`/docs` (Swagger UI) and `/redoc` (ReDoc), with every asset they load served by the engine
from an installed package (`fastapi-offline`'s copies), so that they render with no internet:
FastAPI's own pages load theirs from a CDN and are blank without one. Open, as the schema is."""

from __future__ import annotations

import os

import fastapi_offline
from fastapi import APIRouter
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from starlette.exceptions import HTTPException

from engine.http.contract import Error

STATIC = os.path.join(os.path.dirname(fastapi_offline.__file__), "static")
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
ASSET_PATH = "/docs/assets"
TITLE = "billing engine"

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title=TITLE,
        swagger_js_url=f"{ASSET_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSET_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{ASSET_PATH}/favicon.png",
        swagger_ui_parameters={"validatorUrl": None},  # no call to swagger.io's validator
    )


@router.get("/redoc")
async def redoc() -> HTMLResponse:
    return get_redoc_html(
        openapi_url="/openapi.json",
        title=TITLE,
        redoc_js_url=f"{ASSET_PATH}/redoc.standalone.js",
        redoc_favicon_url=f"{ASSET_PATH}/favicon.png",
        with_google_fonts=False,
    )


@router.get(ASSET_PATH + "/{name}", responses={404: {"model": Error}})
async def asset(name: str) -> FileResponse:
    if name not in ASSETS:  # only these files: never a path into the package or beyond
        raise HTTPException(404, f"no docs asset {name!r}")
    return FileResponse(
        os.path.join(STATIC, name),
        media_type=ASSETS[name],
        headers={"Cache-Control": "public, max-age=86400"},
    )
