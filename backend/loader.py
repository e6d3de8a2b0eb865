"""Load a local Hugging Face checkpoint folder (config.json + *.safetensors) into the backend model.

Two steps, each with its own table: config.json keys become a ModelSpec (and the model's
Variant), then checkpoint tensor names become slices of the model's parameters (q/k/v rows of
`qkv_proj`, gate/up rows of `gate_up_proj`; everything else one to one). Llama, Mistral and
Qwen2 checkpoints share this layout; Mixtral, Qwen2-MoE and Qwen3-MoE add experts
(backend/moe_checkpoint.py).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from safetensors import safe_open

from backend.model import Llama
from backend.moe_checkpoint import MOE_MODEL_TYPES, Index, moe_fields, moe_layer_map, variant_from_config
from simulator.common.errors import ConfigError
from simulator.spec import ModelSpec

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", *MOE_MODEL_TYPES)
BIASED_QKV = ("qwen2", "qwen2_moe")  # model types with q/k/v biases unless config.json says otherwise

# Keys of config.json a checkpoint must have, and the ModelSpec field each one fills.
REQUIRED_KEYS = {
    "hidden_size": "hidden_size",
    "num_hidden_layers": "num_layers",
    "num_attention_heads": "num_heads",
    "intermediate_size": "intermediate_size",
    "vocab_size": "vocab_size",
}

# Tensors a checkpoint may hold that the model does not use.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def spec_from_config(config: dict, name: str = "checkpoint") -> ModelSpec:
    """A ModelSpec from the contents of a Hugging Face config.json."""
    model_type = config.get("model_type", "llama")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(
            f"{name}: model_type {model_type!r} is not supported; "
            f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    missing = [key for key in REQUIRED_KEYS if config.get(key) is None]
    if missing:
        raise ConfigError(f"{name}: config.json lacks {', '.join(missing)}")
    if config.get("hidden_act", "silu") != "silu":
        raise ConfigError(f"{name}: hidden_act {config['hidden_act']!r} is not supported (only silu)")
    if config.get("mlp_bias"):
        raise ConfigError(f"{name}: MLP biases (mlp_bias: true) are not supported")

    rope = config.get("rope_parameters") or {}  # newer transformers versions nest rope settings here
    scaling = config.get("rope_scaling") or rope
    if scaling.get("rope_type", scaling.get("type", "default")) not in ("default", None):
        warnings.warn(
            f"{name}: rope scaling {scaling.get('rope_type', scaling.get('type'))!r} is not applied; "
            "logits differ from the reference model, step times do not",
            stacklevel=2,
        )
    window = config.get("sliding_window")
    if (
        window
        and config.get("use_sliding_window", True)
        and window < config.get("max_position_embeddings", 0)
    ):
        warnings.warn(
            f"{name}: sliding-window attention ({window} tokens) is not applied; attention past that "
            "length differs from the reference model",
            stacklevel=2,
        )
    fields = {field: config[key] for key, field in REQUIRED_KEYS.items()}
    if model_type in MOE_MODEL_TYPES:
        fields.update(moe_fields(config, model_type, name))
    return ModelSpec(
        name=name,
        **fields,
        num_kv_heads=config.get("num_key_value_heads") or config["num_attention_heads"],
        head_dim=config.get("head_dim") or 0,
        max_context=config.get("max_position_embeddings", 2048),
        rope_theta=float(config.get("rope_theta") or rope.get("rope_theta") or 10000.0),
        rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        attention_bias=bool(config.get("attention_bias", model_type in BIASED_QKV)),
        source=f"config.json of {name}",
    )


def read_config(path: str | Path) -> dict:
    """The contents of a checkpoint folder's config.json."""
    folder = _folder(path)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"checkpoint folder {folder} has no config.json")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{config_file} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{config_file} must hold a JSON object")
    return config


def read_spec(path: str | Path) -> ModelSpec:
    """The ModelSpec of a checkpoint folder, without reading its tensors."""
    return spec_from_config(read_config(path), name=_folder(path).name)


def parameter_map(spec: ModelSpec, model_type: str = "llama") -> dict[str, tuple[str, Index]]:
    """Checkpoint tensor name -> (model parameter name, the part of it the tensor fills: rows, an
    expert and its rows, or None for all)."""
    q = spec.num_heads * spec.head_dim
    kv = spec.num_kv_heads * spec.head_dim
    inter = spec.intermediate_size
    mapping = {
        "model.embed_tokens.weight": ("embed_tokens.weight", None),
        "model.norm.weight": ("norm.weight", None),
    }
    if not spec.tie_embeddings:
        mapping["lm_head.weight"] = ("lm_head.weight", None)
    fused_rows = {
        "self_attn.q_proj": ("self_attn.qkv_proj", slice(0, q)),
        "self_attn.k_proj": ("self_attn.qkv_proj", slice(q, q + kv)),
        "self_attn.v_proj": ("self_attn.qkv_proj", slice(q + kv, q + 2 * kv)),
        "mlp.gate_proj": ("mlp.gate_up_proj", slice(0, inter)),
        "mlp.up_proj": ("mlp.gate_up_proj", slice(inter, 2 * inter)),
    }
    norms = ["input_layernorm", "post_attention_layernorm"]
    if variant_from_config({"model_type": model_type}).qk_norm:
        norms += ["self_attn.q_norm", "self_attn.k_norm"]
    for i in range(spec.num_layers):
        hf, ours = f"model.layers.{i}.", f"layers.{i}."
        moe = spec.is_moe and i >= spec.first_dense_layers
        for module, (target, rows) in fused_rows.items():
            if moe and module.startswith("mlp"):
                continue
            mapping[f"{hf}{module}.weight"] = (f"{ours}{target}.weight", rows)
            if spec.attention_bias and module.startswith("self_attn"):
                mapping[f"{hf}{module}.bias"] = (f"{ours}{target}.bias", rows)
        for module in ("self_attn.o_proj",) if moe else ("self_attn.o_proj", "mlp.down_proj"):
            mapping[f"{hf}{module}.weight"] = (f"{ours}{module}.weight", None)
        for norm in norms:
            mapping[f"{hf}{norm}.weight"] = (f"{ours}{norm}.weight", None)
        if moe:
            mapping.update(moe_layer_map(spec, model_type, i))
    return mapping


def load_checkpoint(
    path: str | Path, dtype: str | torch.dtype = "fp32", device: str | torch.device = "cpu"
) -> Llama:
    """Build the model a checkpoint folder describes and fill it with the checkpoint's weights.

    Errors (ConfigError) name what is wrong: a missing folder or config key, a missing tensor, or
    a tensor whose shape differs from what config.json implies (both shapes given).
    """
    folder = _folder(path)
    config = read_config(folder)
    spec = spec_from_config(config, name=folder.name)
    files = _tensor_files(folder)
    mapping = parameter_map(spec, config.get("model_type", "llama"))

    missing = [name for name in mapping if name not in files]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ConfigError(f"checkpoint {folder} lacks tensor(s) {shown}")
    unexpected = [
        name
        for name in files
        if name not in mapping
        and not name.endswith(IGNORED_SUFFIXES)
        and not (spec.tie_embeddings and name == "lm_head.weight")  # some tied checkpoints store a copy
    ]
    if unexpected:
        raise ConfigError(
            f"checkpoint {folder} has tensor(s) its config.json does not account for: "
            f"{', '.join(unexpected[:5])}"
        )

    model = Llama(spec, dtype, device, variant_from_config(config))
    params = dict(model.named_parameters())
    by_file: dict[Path, list[str]] = {}
    for name in mapping:
        by_file.setdefault(files[name], []).append(name)
    with torch.no_grad():
        for file, names in by_file.items():
            with safe_open(file, framework="pt") as f:
                for name in names:
                    target, rows = mapping[name]
                    dest = params[target] if rows is None else params[target][rows]
                    shape = tuple(f.get_slice(name).get_shape())
                    if shape != tuple(dest.shape):
                        raise ConfigError(
                            f"tensor {name} in {file.name} has shape {list(shape)}, "
                            f"config.json implies {list(dest.shape)}"
                        )
                    dest.copy_(f.get_tensor(name))
    return model


def _folder(path: str | Path) -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"checkpoint folder {folder} does not exist")
    return folder


def _tensor_files(folder: Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it (from the index when there is one)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ConfigError(f"{index} has no weight_map")
        files = {name: folder / file for name, file in weight_map.items()}
        for file in set(files.values()):
            if not file.is_file():
                raise ConfigError(f"{index.name} lists {file.name}, which is not in {folder}")
        return files
    paths = sorted(folder.glob("*.safetensors"))
    if not paths:
        raise ConfigError(f"checkpoint folder {folder} has no *.safetensors files")
    files = {}
    for file in paths:
        with safe_open(file, framework="pt") as f:
            files.update(dict.fromkeys(f.keys(), file))
    return files
