"""Hand-made aiconfigurator-core systems folders for the converter's tests (the package itself is
an optional extra CI does not install): the layout and columns its tables use, times in ms."""

from pathlib import Path


def new_system(root: Path, system: str, device: str, nccl: str | None = None) -> tuple[Path, dict]:
    """The folder's frame for one system under vLLM 0.24.0: (its data folder, the columns every
    row carries)."""
    root.mkdir(parents=True)
    (root / "VERSION").write_text("0.12.0\n")
    (root / "query_versions.yaml").write_text("defaults:\n  vllm: {current: '0.24.0'}\n")
    (root / f"{system}.yaml").write_text(
        f"data_dir: data/{system}\ngpu: {{mem_bw_empirical_scaling_factor: 0.8, mem_empirical_constant_latency: 3.0e-6}}\n"
        "node: {num_gpus_per_node: 8}\n" + (f"misc: {{nccl_version: '{nccl}'}}\n" if nccl else ""))
    return root / "data" / system, {"framework": "VLLM", "version": "0.24.0", "device": device}


def write_table(data: Path, family: str, backend: str, version: str, name: str, rows: list[dict]) -> None:
    """One table, `data/<family>/<backend>/<version>/<name>_perf.csv`."""
    import pandas as pd

    folder = data / family / backend / version
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / f"{name}_perf.csv", index=False)


# Hand-made laws of the MLA module tables, microseconds, shared by the fixture and the expectations.
def mla_us(b, length):
    return 40.0 + 0.002 * b * length  # a floor plus the latent read: affine in L, as decode is read


def mla_prefill_us(b, prompt):
    return 1e-3 * b * prompt**2  # pure causal work: sqrt(time) linear in the prompt length
