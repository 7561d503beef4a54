"""The shape of every error the API sends: {"error": {"code": ..., "message": ...}}."""

from __future__ import annotations

import json

from aiohttp import web



class ApiError(web.HTTPException):
    """An HTTP error with the JSON body above: raise it.

    One class for every status keeps call sites short and every error shaped
    the same: `raise ApiError(415, "not_video", "...")`.
    """

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        self.status_code = status  # read by HTTPException.__init__
        body = json.dumps({"error": {"code": code, "message": message}})
        super().__init__(text=body, content_type="application/json", headers=headers)


def wants_html(request: web.Request) -> bool:
    """True for a browser's plain form post, which is sent back to the page, not given JSON."""
    accept = request.headers.get("Accept", "")
    return "text/html" in accept and "application/json" not in accept
