"""A cap on request bodies: nothing the page sends is bigger than a photo upload, so nothing bigger is read.

Gradio's `max_file_size` bounds each uploaded file; other bodies (`/queue/join`'s JSON, a pasted `data:` URL)
had no bound, so one client could make the server read and parse tens of megabytes. A body whose declared
length is over the cap is refused with 413 before a byte of it is read; a body without a declared length
(chunked) is counted as it arrives and refused with 413 as soon as it passes the cap.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse


class BodyLimit:
    """Pure ASGI middleware: HTTP request bodies of at most `limit` bytes."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        try:
            length = int(declared) if declared is not None else None
        except ValueError:
            length = None
        if length is not None and length > self.limit:
            await self.refuse(scope, receive, send)
            return
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # Raised inside the route's body read: FastAPI passes an HTTPException on as a 413 response.
                    raise HTTPException(413, self.message())
            return message

        await self.app(scope, counted, send)

    def message(self) -> str:
        return f"request body too large: the limit is {self.limit / 2**20:.0f} MB"

    async def refuse(self, scope, receive, send):
        response = PlainTextResponse(self.message(), status_code=413, headers={"Connection": "close"})
        await response(scope, receive, send)
