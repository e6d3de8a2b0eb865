"""The engine loop on its own thread, talking to asyncio request handlers.

The engine is single-threaded, so everything that touches it happens on this thread: requests
and aborts arrive through one thread-safe command queue, and each request's new tokens go back
to its handler through `loop.call_soon_threadsafe` into that request's asyncio.Queue. When the
engine has no work the thread blocks on the command queue; otherwise it drains the queue between
steps, so a new request joins the very next step.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

from backend.engine import Engine
from simulator.common.errors import ConfigError
from simulator.scheduling import Sequence

log = logging.getLogger(__name__)

_IDLE_WAIT_S = 0.1  # how often an idle loop wakes up to check for a stop request


@dataclass
class TokenEvent:
    """New tokens of one request from one step; the last event has a finish reason or an error."""

    token_ids: list[int]
    finish_reason: str | None = None
    error: str | None = None


@dataclass(eq=False)
class RequestHandle:
    """One request travelling between a handler and the engine thread."""

    prompt_token_ids: list[int]
    max_tokens: int
    options: dict[str, Any]  # add_request keyword arguments (sampling, eos)
    arrival: float  # engine clock when the HTTP request came in
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    seq: Sequence | None = None  # set on the engine thread
    sent: int = 0  # output tokens already handed to the handler (engine thread only)
    waiting: bool = False  # counted among the waiting requests (submitted, not yet running)

    def push(self, event: TokenEvent) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the handler's event loop has closed: nobody is listening
            pass


class EngineThread:
    """Runs `engine` on a background thread; `submit` and `abort` may be called from any thread.

    max_waiting bounds the requests submitted but not yet running (None: unbounded); `submit`
    refuses more. `metrics` (optional) gets `observe_tokens(seq, start)`, `observe_finish(seq)`
    and `set_state(engine)` calls from the engine thread.
    """

    def __init__(self, engine: Engine, max_waiting: int | None = None, metrics=None):
        self.engine = engine
        self.max_waiting = max_waiting
        self.metrics = metrics
        self._commands: queue.Queue = queue.Queue()
        self._active: dict[int, RequestHandle] = {}  # seq_id -> handle, engine thread only
        self._waiting = 0  # submitted and not yet running; guarded by _lock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="llmsim-engine", daemon=True)

    # --- any thread -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._commands.put(("wake", None))
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def num_waiting(self) -> int:
        return self._waiting

    def submit(self, handle: RequestHandle) -> bool:
        """Queue a request; False (refused) when max_waiting requests are already waiting."""
        with self._lock:
            if self.max_waiting is not None and self._waiting >= self.max_waiting:
                return False
            self._waiting += 1
        handle.waiting = True
        self._commands.put(("add", handle))
        return True

    def abort(self, handle: RequestHandle) -> None:
        """Stop a request (its client went away); its KV blocks return on the engine thread."""
        self._commands.put(("abort", handle))

    # --- engine thread ----------------------------------------------------------------------
    def _run(self) -> None:
        stalled = False  # the last step scheduled nothing: wait for a command before trying again
        while not self._stop.is_set():
            self._drain(block=stalled or not self.engine.has_work)
            if not self.engine.has_work:
                continue
            try:
                record = self.engine.step()
            except Exception as exc:  # a fault in one step must not take the server down
                log.exception("engine step failed")
                self._fail_all(f"engine step failed: {exc}")
                continue
            stalled = record is None
            if record is not None:
                self._publish(record.seq_ids)
            if self.metrics is not None:
                self.metrics.set_state(self.engine)
        self._fail_all("server shutting down")

    def _drain(self, block: bool) -> None:
        try:
            command = self._commands.get(timeout=_IDLE_WAIT_S) if block else self._commands.get_nowait()
            while True:
                self._apply(*command)
                command = self._commands.get_nowait()
        except queue.Empty:
            pass

    def _apply(self, kind: str, handle: RequestHandle | None) -> None:
        if kind == "add":
            self._add(handle)
        elif kind == "abort":
            self._abort(handle)

    def _add(self, handle: RequestHandle) -> None:
        try:
            seq = self.engine.add_request(
                handle.prompt_token_ids, handle.max_tokens, arrival=handle.arrival, **handle.options
            )
        except ConfigError as exc:
            self._leave_waiting(handle)
            handle.push(TokenEvent([], error=str(exc)))
            return
        handle.seq = seq
        if seq.is_finished:  # rejected: it can never fit
            self._leave_waiting(handle)
            handle.push(TokenEvent([], error="the request does not fit in the KV cache"))
            return
        self._active[seq.seq_id] = handle
        if self.metrics is not None:
            self.metrics.set_state(self.engine)

    def _abort(self, handle: RequestHandle) -> None:
        seq = handle.seq
        if seq is None or seq.is_finished:
            return
        self.engine.abort(seq)
        self._active.pop(seq.seq_id, None)
        self._leave_waiting(handle)
        if self.metrics is not None:
            self.metrics.observe_finish(seq)

    def _leave_waiting(self, handle: RequestHandle) -> None:
        """The request stopped waiting (it runs, finished, failed or was aborted)."""
        if handle.waiting:
            handle.waiting = False
            with self._lock:
                self._waiting -= 1

    def _publish(self, seq_ids: list[int]) -> None:
        for seq_id in seq_ids:
            handle = self._active.get(seq_id)
            if handle is None:
                continue
            seq = handle.seq
            self._leave_waiting(handle)
            new = seq.output_token_ids[handle.sent :]
            if not new and not seq.is_finished:
                continue  # a prefill chunk
            if self.metrics is not None:
                self.metrics.observe_tokens(seq, handle.sent)
            handle.sent += len(new)
            reason = None
            if seq.is_finished:
                reason = seq.finish_reason
                del self._active[seq_id]
                if self.metrics is not None:
                    self.metrics.observe_finish(seq)
            handle.push(TokenEvent(list(new), reason))

    def _fail_all(self, message: str) -> None:
        """Abort every request in flight and tell its handler why."""
        for handle in list(self._active.values()):
            if handle.seq is not None and not handle.seq.is_finished:
                try:
                    self.engine.abort(handle.seq)
                except Exception:  # the engine is already in trouble; report the request anyway
                    log.exception("abort failed")
            self._leave_waiting(handle)
            handle.push(TokenEvent([], error=message))
        self._active.clear()
        while True:  # requests still in the command queue never reached the engine
            try:
                kind, handle = self._commands.get_nowait()
            except queue.Empty:
                break
            if kind == "add":
                self._leave_waiting(handle)
                handle.push(TokenEvent([], error=message))
