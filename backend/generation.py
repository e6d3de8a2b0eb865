"""One request's sequences on the engine (one per choice), seen from its HTTP handler.

The handler reads the choices' token events from one queue. While it does, a watcher waits for
the client to disconnect (the ASGI `http.disconnect` message, which the server sends the moment
the connection drops, streamed or not); then every choice still running is aborted, so the
engine frees their KV blocks before its next step. `close()` is idempotent and runs whatever
way the handler ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.requests import Request

from backend.engine_thread import EngineThread, RequestHandle, TokenEvent

_DISCONNECTED = object()


class Generation:
    def __init__(self, worker: EngineThread, handles: list[RequestHandle], queue: asyncio.Queue, arrival: float):
        self.worker = worker
        self.queue = queue
        self.arrival = arrival
        self.open = {h.index: h for h in handles}  # choices the engine is still generating
        self.client_left = False

    async def events(self, request: Request | None = None) -> AsyncIterator[TokenEvent]:
        """Token events of the open choices until all have finished, one fails, or the client
        (of `request`) disconnects."""
        watcher = asyncio.create_task(_watch_disconnect(request, self.queue)) if request is not None else None
        try:
            while self.open:
                item = await self.queue.get()
                if item is _DISCONNECTED:
                    self.client_left = True
                    return
                if item.index not in self.open:
                    continue  # a choice already finished here (a stop string) still sent a token
                if item.finish_reason is not None or item.error is not None:
                    del self.open[item.index]
                yield item
                if item.error is not None:
                    return
        finally:
            if watcher is not None:
                watcher.cancel()
            self.close()

    def finish(self, index: int, reason: str = "stop") -> None:
        """End one choice early (a stop string matched)."""
        handle = self.open.pop(index, None)
        if handle is not None:
            self.worker.abort(handle, reason)

    def close(self) -> None:
        """Abort every choice still running (the client left, or the handler failed)."""
        for handle in self.open.values():
            self.worker.abort(handle)
        self.open.clear()


async def _watch_disconnect(request: Request, queue: asyncio.Queue) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            queue.put_nowait(_DISCONNECTED)
            return
