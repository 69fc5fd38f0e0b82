"""Hugging Face <-> Megatron-core weights for every registered model family, with tensor- and pipeline-parallel
sharding.

- `load_hf_weights(model, hf_dir)`: fill this rank's shard of a GPTModel from a HF safetensors directory
  (single file or sharded with an index json); every tensor is checked by name and shape before any is copied.
- `export_hf_weights(model)`: iterator of full `(hf_name, tensor)` pairs, identical on every rank (TP shards
  gathered, PP stages broadcast). The learner -> rollout-engine weight sync and `save_hf_checkpoint` use it.
- `save_hf_checkpoint(model, out_dir)`: a HF directory (sharded safetensors + index + config) that
  transformers and vLLM load, written atomically by rank 0.

Which HF tensors make which Megatron parameter is the family's map (megatron_ext.models.families:
`ModelFamily.layer_weights`, e.g. Qwen2's q/k/v biases into `linear_qkv.bias`, Qwen3's q/k norms into
`q_layernorm` / `k_layernorm`); this module only knows the layouts. Megatron layouts (verified against
transformers' forward): `linear_qkv` rows (and its bias) are grouped per KV head as [q heads of the group; k; v];
`linear_fc1` rows are [gate; up] on every TP rank; embeddings are padded to `padded_vocab_size` rows and split over
TP; `linear_proj` / `linear_fc2` split their input dimension; norms are whole on every rank.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as dist

from megatron_ext.models import head_dim, model_family, unwrap_model


@dataclass(frozen=True)
class _Parallel:
    tp: int
    tp_rank: int
    tp_group: object
    pp: int
    pp_rank: int
    pp_group: object


def _parallel() -> _Parallel:
    from megatron.core import parallel_state as ps

    return _Parallel(
        tp=ps.get_tensor_model_parallel_world_size(),
        tp_rank=ps.get_tensor_model_parallel_rank(),
        tp_group=ps.get_tensor_model_parallel_group(),
        pp=ps.get_pipeline_model_parallel_world_size(),
        pp_rank=ps.get_pipeline_model_parallel_rank(),
        pp_group=ps.get_pipeline_model_parallel_group(),
    )


# ----------------------------------------------------------------------------------------------------------
# HF checkpoint reading


class HFCheckpointReader:
    """Lazy reader of a HF safetensors directory: names and shapes from headers, tensors on demand."""

    def __init__(self, hf_dir: str | os.PathLike):
        from safetensors import safe_open

        self.dir = Path(hf_dir)
        index = self.dir / "model.safetensors.index.json"
        if index.exists():
            weight_map = json.loads(index.read_text())["weight_map"]
        elif (self.dir / "model.safetensors").exists():
            with safe_open(self.dir / "model.safetensors", framework="pt") as f:
                weight_map = {name: "model.safetensors" for name in f.keys()}
        else:
            raise FileNotFoundError(
                f"{self.dir} holds no model.safetensors or model.safetensors.index.json; "
                "point at a Hugging Face model directory saved with safetensors"
            )
        self.weight_map: dict[str, str] = weight_map
        self._open = {}
        self._safe_open = safe_open

    def _file(self, name: str):
        fname = self.weight_map[name]
        if fname not in self._open:
            path = self.dir / fname
            if not path.exists():
                raise FileNotFoundError(f"{path} (listed in the index for {name!r}) does not exist")
            self._open[fname] = self._safe_open(path, framework="pt")
        return self._open[fname]

    def __contains__(self, name: str) -> bool:
        return name in self.weight_map

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._file(name).get_slice(name).get_shape())

    def get(self, name: str) -> torch.Tensor:
        return self._file(name).get_tensor(name)


def expected_hf_shapes(hf_config) -> dict[str, tuple[int, ...]]:
    """Every tensor a HF checkpoint of the config's family must hold, with its shape."""
    return model_family(hf_config).hf_tensor_shapes(hf_config)


def check_hf_checkpoint(reader: HFCheckpointReader, hf_config) -> None:
    """Raise ValueError naming the first missing or mis-shaped tensor; nothing is loaded."""
    for name, shape in expected_hf_shapes(hf_config).items():
        if name not in reader:
            raise ValueError(f"{reader.dir}: tensor {name!r} is missing from the checkpoint")
        got = reader.shape(name)
        if got != shape:
            raise ValueError(f"{reader.dir}: tensor {name!r} has shape {list(got)}, expected {list(shape)} from config.json")


# ----------------------------------------------------------------------------------------------------------
# HF -> Megatron


def _qkv_full(q, k, v, hf_config) -> torch.Tensor:
    """[q; k; v] (HF) -> Megatron's per-group interleaved rows [q_g; k_g; v_g] for g in groups."""
    hd, nq, nkv = head_dim(hf_config), hf_config.num_attention_heads, hf_config.num_key_value_heads
    q = q.reshape(nkv, (nq // nkv) * hd, *q.shape[1:])
    k = k.reshape(nkv, hd, *k.shape[1:])
    v = v.reshape(nkv, hd, *v.shape[1:])
    return torch.cat([q, k, v], dim=1).reshape(-1, *q.shape[2:])


def _qkv_split(qkv, hf_config) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    hd, nq, nkv = head_dim(hf_config), hf_config.num_attention_heads, hf_config.num_key_value_heads
    per_group = (nq // nkv) * hd
    grouped = qkv.reshape(nkv, per_group + 2 * hd, *qkv.shape[1:])
    q, k, v = grouped.split([per_group, hd, hd], dim=1)
    return q.reshape(-1, *qkv.shape[1:]), k.reshape(-1, *qkv.shape[1:]), v.reshape(-1, *qkv.shape[1:])


def _pad_vocab(weight: torch.Tensor, padded: int) -> torch.Tensor:
    if weight.shape[0] == padded:
        return weight
    return torch.cat([weight, weight.new_zeros(padded - weight.shape[0], *weight.shape[1:])])


def _layer_hf_prefix(megatron_layer_number: int) -> str:
    return f"model.layers.{megatron_layer_number - 1}."


def _megatron_params(model) -> Iterator[tuple[str, torch.nn.Parameter, int | None]]:
    """(name, param, global 1-based layer number or None) for every parameter of this rank's stage."""
    gpt = unwrap_model(model)
    for name, param in gpt.named_parameters():
        if name.startswith("decoder.layers."):
            local = int(name.split(".")[2])
            yield name, param, gpt.decoder.layers[local].layer_number
        else:
            yield name, param, None


def _hf_source_for(name: str, layer_number: int | None, gpt, hf_config):
    """For one Megatron parameter: the HF tensor names it is built from and the kind of its layout."""
    if layer_number is None:
        if name == "embedding.word_embeddings.weight":
            return ["model.embed_tokens.weight"], "vocab"
        if name == "output_layer.weight":
            tied = hf_config.tie_word_embeddings
            return ["model.embed_tokens.weight" if tied else "lm_head.weight"], "vocab"
        if name == "decoder.final_layernorm.weight":
            return ["model.norm.weight"], "replicated"
        raise ValueError(f"no Hugging Face tensor maps to Megatron parameter {name!r}")
    suffix = name.split(".", 3)[3]
    layer_weights = model_family(hf_config).layer_weights()
    if suffix not in layer_weights:
        raise ValueError(f"no Hugging Face tensor maps to Megatron parameter {name!r}")
    hf_names, kind = layer_weights[suffix]
    p = _layer_hf_prefix(layer_number)
    return [p + n for n in hf_names], kind


def _shard_for_rank(kind: str, hf_tensors: list[torch.Tensor], hf_config, padded_vocab: int, par: _Parallel):
    if kind == "replicated":
        return hf_tensors[0]
    if kind == "vocab":
        return _pad_vocab(hf_tensors[0], padded_vocab).chunk(par.tp, dim=0)[par.tp_rank]
    if kind == "row":
        return hf_tensors[0].chunk(par.tp, dim=1)[par.tp_rank]
    if kind == "qkv":
        return _qkv_full(*hf_tensors, hf_config).chunk(par.tp, dim=0)[par.tp_rank]
    if kind == "glu":
        gate, up = hf_tensors
        return torch.cat([gate.chunk(par.tp, dim=0)[par.tp_rank], up.chunk(par.tp, dim=0)[par.tp_rank]])
    raise AssertionError(kind)


@torch.no_grad()
def load_hf_weights(model, hf_dir: str | os.PathLike) -> None:
    """Copy a HF checkpoint into this rank's shard of `model` (validated completely first)."""
    gpt = unwrap_model(model)
    hf_config = gpt.hf_config
    reader = HFCheckpointReader(hf_dir)
    check_hf_checkpoint(reader, hf_config)
    par = _parallel()
    plan = []
    for name, param, layer_number in _megatron_params(model):
        sources, kind = _hf_source_for(name, layer_number, gpt, hf_config)
        plan.append((name, param, sources, kind))
    for name, param, sources, kind in plan:
        shard = _shard_for_rank(kind, [reader.get(s) for s in sources], hf_config, gpt.vocab_size, par)
        if tuple(shard.shape) != tuple(param.shape):
            raise ValueError(f"Megatron parameter {name!r}: expected shape {list(param.shape)}, built {list(shard.shape)}")
        param.copy_(shard.to(param.dtype))


# ----------------------------------------------------------------------------------------------------------
# Megatron -> HF


def _gather_tp(tensor: torch.Tensor, dim: int, par: _Parallel) -> torch.Tensor:
    if par.tp == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(par.tp)]
    dist.all_gather(parts, tensor.contiguous(), group=par.tp_group)
    return torch.cat(parts, dim=dim)


def _to_hf(name: str, layer_number: int | None, param: torch.Tensor, gpt, hf_config, par: _Parallel):
    """HF (name, full tensor) pairs for one Megatron parameter of this stage (TP-gathered)."""
    sources, kind = _hf_source_for(name, layer_number, gpt, hf_config)
    t = param.detach()
    if kind == "replicated":
        return [(sources[0], t)]
    if kind == "vocab":
        full = _gather_tp(t, 0, par)[: hf_config.vocab_size]
        hf_name = "lm_head.weight" if name == "output_layer.weight" else sources[0]
        return [(hf_name, full)]
    if kind == "row":
        return [(sources[0], _gather_tp(t, 1, par))]
    if kind == "qkv":
        return list(zip(sources, _qkv_split(_gather_tp(t, 0, par), hf_config)))
    if kind == "glu":
        parts = [torch.empty_like(t) for _ in range(par.tp)] if par.tp > 1 else [t]
        if par.tp > 1:
            dist.all_gather(parts, t.contiguous(), group=par.tp_group)
        gates, ups = zip(*(p.chunk(2, dim=0) for p in parts))
        return [(sources[0], torch.cat(gates)), (sources[1], torch.cat(ups))]
    raise AssertionError(kind)


def _stage_hf_tensors(model, par: _Parallel, include_tied_lm_head: bool) -> Iterator[tuple[str, torch.Tensor]]:
    gpt = unwrap_model(model)
    hf_config = gpt.hf_config
    tied = hf_config.tie_word_embeddings
    for name, param, layer_number in _megatron_params(model):
        if name == "output_layer.weight" and tied:
            continue  # the copy of the embedding kept by the last stage; exported once from the first stage
        for hf_name, tensor in _to_hf(name, layer_number, param, gpt, hf_config, par):
            yield hf_name, tensor
            if hf_name == "model.embed_tokens.weight" and tied and include_tied_lm_head:
                yield "lm_head.weight", tensor


@torch.no_grad()
def export_hf_weights(
    model, *, include_tied_lm_head: bool = False, dtype: torch.dtype | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield every HF tensor of the full model on every rank; all ranks must iterate together.

    `include_tied_lm_head=True` also yields `lm_head.weight` for tied models (vLLM keeps the head apart and
    must be given it); HF checkpoints of tied models omit it.
    """
    par = _parallel()
    cast = (lambda t: t.to(dtype)) if dtype is not None else (lambda t: t)
    device = next(unwrap_model(model).parameters()).device
    if par.pp == 1:
        for name, tensor in _stage_hf_tensors(model, par, include_tied_lm_head):
            yield name, cast(tensor)
        return
    for stage in range(par.pp):
        src = dist.get_global_rank(par.pp_group, stage)
        local = list(_stage_hf_tensors(model, par, include_tied_lm_head)) if par.pp_rank == stage else None
        meta = [[(n, tuple(t.shape), t.dtype) for n, t in local] if local is not None else None]
        dist.broadcast_object_list(meta, src=src, group=par.pp_group)
        for i, (name, shape, tdtype) in enumerate(meta[0]):
            tensor = local[i][1].contiguous() if local is not None else torch.empty(shape, dtype=tdtype,
                                                                                     device=device)
            dist.broadcast(tensor, src=src, group=par.pp_group)
            yield name, cast(tensor)


def save_hf_checkpoint(
    model,
    out_dir: str | os.PathLike,
    *,
    tokenizer_dir: str | os.PathLike | None = None,
    max_shard_bytes: int = 2 * 1024**3,
    dtype: torch.dtype | None = None,
    extra_eos_ids: tuple[int, ...] = (),
) -> Path | None:
    """Write the model as a HF directory (rank 0 writes; every rank must call). Atomic: a temp dir is
    renamed onto `out_dir` only when complete. Returns the path on rank 0. `extra_eos_ids` join
    generation_config.json's eos_token_id: tokens the model was trained to end on besides its EOS (stage one: the
    corpus's document separator, which for a chat model is not its EOS)."""
    from safetensors.torch import save_file

    gpt = unwrap_model(model)
    hf_config = gpt.hf_config
    out_dir = Path(out_dir)
    writer = dist.get_rank() == 0 if dist.is_initialized() else True
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if writer:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    shards: list[dict[str, torch.Tensor]] = [{}]
    shard_bytes = 0
    for name, tensor in export_hf_weights(model, dtype=dtype):
        if not writer:
            continue
        nbytes = tensor.numel() * tensor.element_size()
        if shard_bytes and shard_bytes + nbytes > max_shard_bytes:
            shards.append({})
            shard_bytes = 0
        shards[-1][name] = tensor.detach().cpu().contiguous()
        shard_bytes += nbytes
    if not writer:
        if dist.is_initialized():
            dist.barrier()
        return None
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        fname = "model.safetensors" if len(shards) == 1 else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(tmp / fname), metadata={"format": "pt"})
        for name, t in shard.items():
            weight_map[name] = fname
            total += t.numel() * t.element_size()
    if len(shards) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    config = hf_config.__class__.from_dict(hf_config.to_dict())
    if dtype is not None:
        config.torch_dtype = dtype
    config.save_pretrained(tmp)
    if tokenizer_dir is not None:
        from megatron_ext.checkpoint import copy_tokenizer_files

        copy_tokenizer_files(tokenizer_dir, tmp)
    if extra_eos_ids:
        _add_eos_ids(tmp, config, extra_eos_ids)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    if dist.is_initialized():
        dist.barrier()
    return out_dir


def _add_eos_ids(model_dir: Path, hf_config, ids: tuple[int, ...]) -> None:
    """generation_config.json's eos_token_id extended by `ids` (the file made from the model config if absent)."""
    from transformers import GenerationConfig

    if (model_dir / "generation_config.json").is_file():
        generation = GenerationConfig.from_pretrained(model_dir)
    else:
        generation = GenerationConfig.from_model_config(hf_config)
    eos = generation.eos_token_id
    eos = list(eos) if isinstance(eos, (list, tuple)) else [] if eos is None else [eos]
    if hf_config.eos_token_id is not None and hf_config.eos_token_id not in eos:
        eos.insert(0, hf_config.eos_token_id)
    extended = eos + [int(i) for i in ids if int(i) not in eos]
    if extended != eos:
        generation.eos_token_id = extended if len(extended) > 1 else extended[0]
        generation.save_pretrained(model_dir)
