"""Load tools no one here wrote, run for real against the server: each one skipped when not installed.

They load the exported tokenizer by path, offline, and must count exactly the tokens the server
generated (they re-tokenize the text they received, or read the usage).
"""

import socket
import threading
import time

import httpx
import pytest
import torch

from backend import load_tools
from backend.engine import Engine
from backend.runner import ModelRunner
from backend.serve_command import tokenizer_folder
from backend.server import Server, make_uvicorn
from simulator.scheduling import SchedulerConfig

MODEL = "llama-20m"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tool and the engine share a small machine
    server = Server(Engine(ModelRunner(MODEL, device="cpu", kv_cache_gb=0.05, seed=0), SchedulerConfig()), MODEL)
    folder = tokenizer_folder(server, None, str(tmp_path_factory.mktemp("tokenizer")))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    uv = make_uvicorn(server, log_level="warning")
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not uv.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        yield server, f"http://127.0.0.1:{sock.getsockname()[1]}", folder
    finally:
        uv.should_exit = True
        thread.join(60)
        sock.close()
        torch.set_num_threads(threads)


TOOLS = [pytest.param(tool, marks=pytest.mark.skipif(load_tools.installed(tool) is None, reason=f"{tool} is not installed"))
         for tool in load_tools.TOOLS]  # fmt: skip


@pytest.mark.parametrize("tool", TOOLS)
def test_a_load_tool_runs_offline_and_counts_the_generated_tokens(tool, live, tmp_path):
    server, url, folder = live
    load = load_tools.Load(url, MODEL, folder, requests=4, concurrency=2, prompt_tokens=32, output_tokens=16)
    run = load_tools.run_tool(tool, load, tmp_path, timeout=300)
    assert (run.completed, run.errors) == (4, 0)
    assert run.output_tokens == 16  # not 48: one token of text per generated token
    assert run.ttft_ms > 0 and run.itl_ms > 0
    metrics = httpx.get(url + "/metrics", timeout=30).text
    assert f'llmsim_num_requests_running{{model_name="{MODEL}"}} 0.0' in metrics
    assert server.engine.blocks.num_free == server.engine.runner.num_blocks
