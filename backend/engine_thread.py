"""The engine loop on its own thread, talking to asyncio request handlers.

The engine is single-threaded, so everything that touches it happens on this thread: requests
and aborts arrive through one thread-safe command queue, and each request's new tokens go back
to its handler through `loop.call_soon_threadsafe` into that request's asyncio.Queue. When the
engine has no work the thread blocks on the command queue; otherwise it drains the queue between
steps, so a new request joins the very next step and an abort (a client that left, a stop
string that matched) frees its sequence's KV blocks before the next step runs. The load gauges
are updated after every step and every abort.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

from backend.engine import Engine
from backend.logprobs import LogitsTap, TokenLogprob
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
    error_status: int = 500  # the HTTP status the error maps to (503 when the server shuts down)
    logprobs: list[TokenLogprob | None] | None = None  # one per token, when the request asked for them
    index: int = 0  # the choice of the request this event belongs to


@dataclass(eq=False)
class RequestHandle:
    """One request travelling between a handler and the engine thread."""

    prompt_token_ids: list[int]
    max_tokens: int
    options: dict[str, Any]  # add_request keyword arguments (sampling, eos)
    arrival: float  # engine clock when the HTTP request came in
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)  # may be shared by a request's choices
    index: int = 0  # which choice of its request this is
    top_logprobs: int | None = None  # None: no logprobs; k: the chosen token's and k alternatives
    seq: Sequence | None = None  # set on the engine thread
    sent: int = 0  # output tokens already handed to the handler (engine thread only)
    waiting: bool = False  # counted among the waiting requests (submitted, not yet running)

    def push(self, event: TokenEvent) -> None:
        event.index = self.index
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
        self._tap = LogitsTap(engine.runner.model)
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

    def submit(self, *handles: RequestHandle) -> bool:
        """Queue requests (all or none); False (refused) when that would put more than
        max_waiting requests in the waiting queue."""
        with self._lock:
            if self.max_waiting is not None and self._waiting + len(handles) > self.max_waiting:
                return False
            self._waiting += len(handles)
        for handle in handles:
            handle.waiting = True
            self._commands.put(("add", handle))
        return True

    def abort(self, handle: RequestHandle, reason: str = "abort") -> None:
        """Stop a request: "abort" when its client went away, "stop" when a stop string matched.
        Its KV blocks return on the engine thread before the next step."""
        self._commands.put(("abort", (handle, reason)))

    def fail_all(self, message: str, status: int = 503) -> None:
        """End every request in flight with an error (the server is shutting down)."""
        self._commands.put(("fail", (message, status)))

    # --- engine thread ----------------------------------------------------------------------
    def _run(self) -> None:
        stalled = False  # the last step scheduled nothing: wait for a command before trying again
        while not self._stop.is_set():
            self._drain(block=stalled or not self.engine.has_work)
            if not self.engine.has_work:
                continue
            self._tap.wanted = any(h.top_logprobs is not None for h in self._active.values())
            try:
                record = self.engine.step()
            except Exception as exc:  # a fault in one step must not take the server down
                log.exception("engine step failed")
                self._fail_all(f"engine step failed: {exc}", 500)
                continue
            stalled = record is None
            if record is not None:
                self._publish(record.seq_ids)
            self._tap.clear()
            self._report_state()
        self._fail_all("server shutting down", 503)

    def _drain(self, block: bool) -> None:
        try:
            command = self._commands.get(timeout=_IDLE_WAIT_S) if block else self._commands.get_nowait()
            while True:
                self._apply(*command)
                command = self._commands.get_nowait()
        except queue.Empty:
            pass

    def _apply(self, kind: str, arg) -> None:
        if kind == "add":
            self._add(arg)
        elif kind == "abort":
            self._abort(*arg)
        elif kind == "fail":
            self._fail_all(*arg)

    def _report_state(self) -> None:
        if self.metrics is not None:
            self.metrics.set_state(self.engine)

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
        self._report_state()

    def _abort(self, handle: RequestHandle, reason: str) -> None:
        seq = handle.seq
        if seq is None or seq.is_finished:
            return
        self.engine.abort(seq, reason)
        self._active.pop(seq.seq_id, None)
        self._leave_waiting(handle)
        if self.metrics is not None:
            self.metrics.observe_finish(seq)
        self._report_state()

    def _leave_waiting(self, handle: RequestHandle) -> None:
        """The request stopped waiting (it runs, finished, failed or was aborted)."""
        if handle.waiting:
            handle.waiting = False
            with self._lock:
                self._waiting -= 1

    def _publish(self, seq_ids: list[int]) -> None:
        for row, seq_id in enumerate(seq_ids):  # rows of the step, in the order of its logits
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
            logprobs = None
            if handle.top_logprobs is not None and new:  # a step samples one token per sequence
                logprobs = [None] * (len(new) - 1) + [self._tap.read(row, new[-1], handle.top_logprobs)]
            reason = None
            if seq.is_finished:
                reason = seq.finish_reason
                del self._active[seq_id]
                if self.metrics is not None:
                    self.metrics.observe_finish(seq)
            handle.push(TokenEvent(list(new), reason, logprobs=logprobs))

    def _fail_all(self, message: str, status: int) -> None:
        """Abort every request in flight and tell its handler why."""
        for handle in list(self._active.values()):
            if handle.seq is not None and not handle.seq.is_finished:
                try:
                    self.engine.abort(handle.seq)
                except Exception:  # the engine is already in trouble; report the request anyway
                    log.exception("abort failed")
            self._leave_waiting(handle)
            if self.metrics is not None and handle.seq is not None:
                self.metrics.observe_finish(handle.seq)
            handle.push(TokenEvent([], error=message, error_status=status))
        self._active.clear()
        while True:  # requests still in the command queue never reached the engine
            try:
                kind, arg = self._commands.get_nowait()
            except queue.Empty:
                break
            if kind == "add":
                self._leave_waiting(arg)
                arg.push(TokenEvent([], error=message, error_status=status))
        self._report_state()
