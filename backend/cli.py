"""`llmsim serve` (the engine as an OpenAI-compatible server) and `llmsim export-tokenizer`, registered
through the `llmsim.commands` entry point; torch and the web stack load only when a command runs."""

from __future__ import annotations


def register(sub) -> None:
    """Add the engine's subcommands to the `llmsim` parser's subparsers."""
    _add_serve_parser(sub)


def _cmd_serve(args) -> int:
    from backend.serve_command import run_cli  # torch and the web stack load only for this command

    return run_cli(args)


def _add_serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve the engine as an OpenAI-compatible HTTP server")
    p.add_argument("--model", default=None, help="catalog model name (random weights), e.g. llama-100m; "
                   "with --checkpoint, the name the server reports (default: the folder's name)")
    p.add_argument("--checkpoint", default=None, metavar="DIR", help="Hugging Face safetensors folder to load")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' on every route but /health")
    p.add_argument("--public-metrics", action="store_true", help="with --api-key: leave /metrics open")
    p.add_argument("--drain-timeout", type=float, default=30.0,
                   help="on SIGTERM, seconds running requests may finish before they are ended (default 30)")
    p.add_argument("--tokenizer-dir", default=None, metavar="DIR",
                   help="where to write the model's tokenizer for load tools (default results/tokenizer/MODEL)")
    p.add_argument("--device", default="auto", help="auto (a CUDA GPU if there is one), cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="weights and activations")
    p.add_argument("--quantization", default=None, choices=["int8"], help="int8 weight-only linear layers")
    p.add_argument("--max-num-seqs", type=int, default=256, help="most sequences in one step (default 256)")
    p.add_argument("--max-waiting", type=int, default=None,
                   help="refuse requests (HTTP 429) while this many are waiting (default: unbounded)")
    p.add_argument("--policy", default="vllm", help="batching policy, a scheduler policy name (default vllm)")
    p.add_argument("--max-model-len", type=int, default=None, help="longest prompt + output (default: the model's)")
    p.add_argument("--kv-cache-gb", type=float, default=None,
                   help="KV-cache memory in GiB (default: 1 on CPU, 80%% of free memory on a GPU)")
    p.add_argument("--enable-prefix-caching", action="store_true", help="share KV blocks of equal prompt prefixes")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("export-tokenizer", help="write a catalog model's tokenizer (tokenizer.json) for load tools")
    p.add_argument("model", help="catalog model name, e.g. llama-20m")
    p.add_argument("dir", help="folder to write tokenizer.json and tokenizer_config.json to")
    p.set_defaults(func=_cmd_export_tokenizer)


def _cmd_export_tokenizer(args) -> int:
    from backend.char_tokenizer import run_cli

    return run_cli(args)
