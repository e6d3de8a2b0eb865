"""Building the server from command-line settings and running it: `llmsim serve`."""

from __future__ import annotations

from pathlib import Path

from backend.engine import Engine
from backend.server import DEFAULT_DRAIN_TIMEOUT_S, Server, make_uvicorn
from backend.tokenizer import HFTokenizer, load_tokenizer


def build_server(
    model: str | None,
    *,
    checkpoint: str | None = None,
    device: str = "auto",
    dtype: str = "fp32",
    quantization: str | None = None,
    kv_cache_gb: float | None = None,
    scheduler: dict | None = None,
    api_key: str | None = None,
    max_waiting: int | None = None,
    seed: int = 0,
    public_metrics: bool = False,
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT_S,
) -> Server:
    """A Server for a catalog model (random weights) or a checkpoint folder."""
    from pydantic import ValidationError

    from backend.device import resolve_device
    from backend.loader import load_checkpoint
    from backend.runner import ModelRunner
    from simulator.common.errors import ConfigError
    from simulator.scheduling import SchedulerConfig

    if model is None and checkpoint is None:
        raise ConfigError("--model: give a catalog model name, or --checkpoint DIR")
    if not drain_timeout >= 0:
        raise ConfigError(f"--drain-timeout: got {drain_timeout}; allowed: seconds >= 0")
    try:
        config = SchedulerConfig(**(scheduler or {}))
    except ValidationError as exc:
        err = exc.errors()[0]
        flag = "--" + "-".join(str(p) for p in err["loc"]).replace("_", "-")
        raise ConfigError(f"{flag}: {err['msg']} (got {err.get('input')!r})") from None
    source = load_checkpoint(checkpoint, dtype, resolve_device(device)) if checkpoint else model
    runner = ModelRunner(source, device=device, dtype=dtype, quantization=quantization,
                         kv_cache_gb=kv_cache_gb, block_size=config.block_size, seed=seed)  # fmt: skip
    engine = Engine(runner, config, max_records=100_000)
    name = model or runner.spec.name
    tokenizer = load_tokenizer(checkpoint, runner.spec.vocab_size)
    return Server(engine, name, api_key=api_key, max_waiting=max_waiting, tokenizer=tokenizer,
                  public_metrics=public_metrics, drain_timeout=drain_timeout)  # fmt: skip


def tokenizer_folder(server: Server, checkpoint: str | None, folder: str | None) -> Path:
    """The folder load tools load the served model's tokenizer from: the checkpoint's own, or
    the character tokenizer written to `folder` (default results/tokenizer/<model name>)."""
    from backend import char_tokenizer

    if isinstance(server.tokenizer, HFTokenizer) and checkpoint is not None:
        return Path(checkpoint).resolve()
    path = Path(folder) if folder else Path("results") / "tokenizer" / server.model_name
    return char_tokenizer.export(server.vocab_size, server.engine.max_model_len, path).resolve()


def run_cli(args) -> int:
    """`llmsim serve`: build the server from command-line arguments and serve until interrupted."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    scheduler = {"policy": args.policy, "max_num_seqs": args.max_num_seqs}
    if args.max_model_len:
        scheduler["max_model_len"] = args.max_model_len
    if args.enable_prefix_caching:
        scheduler["enable_prefix_caching"] = True
    server = build_server(
        args.model,
        checkpoint=args.checkpoint,
        device=args.device,
        dtype=args.dtype,
        quantization=args.quantization,
        kv_cache_gb=args.kv_cache_gb,
        scheduler=scheduler,
        api_key=args.api_key,
        max_waiting=args.max_waiting,
        seed=args.seed,
        public_metrics=args.public_metrics,
        drain_timeout=args.drain_timeout,
    )
    tokenizer = tokenizer_folder(server, args.checkpoint, args.tokenizer_dir)
    runner = server.engine.runner
    print(
        f"llmsim serve: {server.model_name} on {runner.device} ({str(runner.dtype).removeprefix('torch.')}"
        f"{', int8 weights' if runner.quantization else ''}), {runner.weight_bytes / 2**20:,.0f} MiB of weights, "
        f"KV cache {runner.num_blocks} blocks x {runner.block_size} tokens, policy {args.policy}; "
        f"http://{args.host}:{args.port}/v1"
    )
    print(f"tokenizer: {tokenizer} (load tools load it by path, offline; docs/serving.md has their commands)")
    if runner.device.type == "cpu":
        from backend import native

        print(f"native CPU kernels: {native.status()}")
    make_uvicorn(server, host=args.host, port=args.port, log_level=args.log_level).run()
    return 0
