"""Stage-one (continued pretraining) settings: the one place their defaults live.

Defaults are the tiny CPU run (random-init `tiny` Llama on the synthetic math corpus; loss halves in a few
minutes on 2 cores). A cluster run of Llama-3.2-3B overrides model.hf_dir, data.blend, the sizes and parallel.*.
`PretrainConfig.validate(world_size)` checks everything that can be checked before a process group starts
(including the model shape against TP / PP) and raises ValueError saying what to change.
"""

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from cli.config import apply_overrides, at_least, build, check, load_file
from pipeline.metrics import WandbConfig
from pipeline.optim import OptimConfig


@dataclass
class ModelConfig:
    hf_dir: str = ""
    """Hugging Face Llama directory to continue from (config.json + safetensors); empty: random init from preset."""
    preset: str = "tiny"
    """Shape for random init (pipeline.model_presets: tiny, llama3.2-3b); ignored when hf_dir is set."""
    overrides: dict = field(default_factory=dict)
    """LlamaConfig fields that replace the preset's, e.g. {"num_hidden_layers": 2}; random init only."""
    tokenizer_dir: str = ""
    """Tokenizer (HF directory) of the data; empty: hf_dir. Copied into checkpoints and the HF export."""


@dataclass
class DataConfig:
    blend: list = field(default_factory=list)
    """Tokenized datasets (PREFIX of PREFIX.bin/.idx from data_prep), optionally weighted:
    ["a"], ["0.7", "a", "0.3", "b"], {"a": 0.7, "b": 0.3} or [[0.7, "a"], [0.3, "b"]]."""
    valid_blend: list = field(default_factory=list)
    """Separate validation datasets (same spellings); empty: validation comes from `split` of the blend."""
    split: str = "98,2,0"
    """Train / validation / test shares of each dataset's documents (Megatron's --split); used without valid_blend."""
    seq_length: int = field(default=256, metadata=at_least(2))
    """Tokens per training sequence (documents are concatenated and cut, as Megatron does)."""
    eod_mask_loss: bool = True
    """No loss on the end-of-document token's prediction (the next document's first token): Megatron's --eod-mask-loss."""
    reset_attention_mask: bool = False
    """Block attention across document boundaries inside a sequence (Megatron's --reset-attention-mask; slower)."""
    eod_token_id: int = -1
    """End-of-document token separating documents in the .bin files; -1: the one `data_prep tokenize` recorded in
    their .summary.json, else the model's document-end token (data_prep.tokenize_corpus.resolve_eod)."""
    cache_dir: str = ""
    """Where GPTDataset writes its shuffle / sample index caches; empty: OUTPUT_DIR/data_cache."""


@dataclass
class ParallelConfig:
    tp: int = field(default=1, metadata=at_least(1))
    """Tensor-parallel size: must divide the KV heads (and so the query heads) and the FFN size."""
    pp: int = field(default=1, metadata=at_least(1))
    """Pipeline-parallel size: must divide the number of layers. DP = world size / (tp x pp)."""
    dtype: str = "auto"
    """Parameter dtype: auto (bf16 on GPU, fp32 on CPU), bfloat16 (GPU only) or float32."""
    use_distributed_optimizer: str | bool = "auto"
    """Shard optimizer state over DP: auto (on an accelerator when DP > 1), true or false."""
    overlap_grad_reduce: str | bool = "auto"
    """Overlap DP gradient reduction with backward: auto (on GPU), true or false."""
    threads_per_rank: int = field(default=0, metadata=at_least(0))
    """torch threads per rank on CPU (0: CPU cores / ranks on this node)."""
    recompute: str = "none"
    """Activation recomputation (Megatron's): none, selective (core attention) or full (each layer keeps only its
    input; ~a third more compute for a small fraction of the activation memory). Same loss and gradients."""


@dataclass
class ScheduleConfig:
    train_iters: int = field(default=600, metadata=at_least(1))
    """Optimizer steps of the whole run. The tiny default needs ~600: its greedy accuracy on the synthetic test
    questions is ~7% after 300 steps of 16 sequences and ~34% after 600 of 8 (the same tokens, similar time)."""
    global_batch_size: int = field(default=8, metadata=at_least(1))
    """Sequences per optimizer step, over all data-parallel ranks (tokens per step = this x data.seq_length)."""
    micro_batch_size: int = field(default=4, metadata=at_least(1))
    """Sequences per forward/backward on one rank; global_batch_size / (micro_batch_size x DP) micro-batches per step."""
    eval_interval: int = field(default=50, metadata=at_least(0))
    """Validation loss every this many steps (and before the first and after the last); 0 disables validation."""
    eval_iters: int = field(default=4, metadata=at_least(0))
    """Global batches of validation data per evaluation (the same ones every time, so values compare)."""
    exit_duration_min: float = field(default=0.0, metadata=at_least(0.0))
    """Checkpoint and exit cleanly after this many minutes of this process (0: no limit); SIGTERM/SIGUSR1 do the same."""


@dataclass
class CheckpointConfig:
    interval: int = field(default=100, metadata=at_least(0))
    """Save a checkpoint every this many steps (and always at the end and on a requested exit); 0: only those."""
    keep_last: int = field(default=2, metadata=at_least(0))
    """Keep this many newest checkpoints (0: keep all)."""
    resume_from: str = ""
    """Resume from this iter_* directory (or a root of them); empty: the newest complete one in OUTPUT_DIR/checkpoints."""
    reshardable_optimizer: bool = True
    """Distributed optimizer only: save its state resumable at any TP/PP/DP (gathered on DP rank 0, needs host memory
    for one model-parallel shard's fp32 state); false: each rank writes its own shard (faster; same TP/PP, any DP).
    Without transformer-engine / Apex (CPU) it is always per rank: megatron-core 0.16 cannot load the other there."""


@dataclass
class LoggingConfig:
    log_interval: int = field(default=1, metadata=at_least(1))
    """Write train metrics (loss, lr, grad norm, tokens/s, MFU) every this many steps."""
    progress_bar: bool = True
    """tqdm progress bar on rank 0."""
    peak_flops_per_rank: float = 0.0
    """Matmul FLOP/s one rank can reach, the MFU denominator; 0: measured at start-up (square matmuls, this dtype)."""
    wandb: WandbConfig = field(default_factory=WandbConfig)
    """Weights & Biases as a third metrics sink (off unless `logging.wandb.project` is set)."""


@dataclass
class PretrainConfig:
    output_dir: str = "outputs/pretrain"
    """OUT: OUT/checkpoints/iter_*, OUT/metrics.jsonl, OUT/tensorboard/, OUT/hf/ (final export with tokenizer)."""
    seed: int = 1234
    """Seeds the random init, Megatron's RNG tracker and the dataset shuffles."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Where the weights and tokenizer come from."""
    data: DataConfig = field(default_factory=DataConfig)
    """The tokenized blend and how sequences are cut from it."""
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    """TP / PP (DP follows from the world size), dtype, optimizer sharding, CPU threads."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """AdamW, learning-rate schedule, gradient clipping (pipeline.optim)."""
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    """Steps, batch sizes, evaluation, time limit."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """When to save, how many to keep, where to resume from."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """Metrics cadence, progress bar, MFU denominator."""

    # ---- (de)serialisation -------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, values: dict) -> "PretrainConfig":
        """From a config file's object and `Text` overrides (cli.config): every value read by its field's type."""
        return build(cls, values)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "PretrainConfig":
        """From a JSON or YAML file of nested sections."""
        return cls.from_dict(load_file(path))

    def with_overrides(self, overrides: list[str]) -> "PretrainConfig":
        """A copy with `section.field=value` overrides applied, each read by its field's type."""
        return PretrainConfig.from_dict(apply_overrides(self.to_dict(), overrides))

    # ---- validation --------------------------------------------------------------------------------------

    def validate(self, world_size: int) -> "ResolvedModel":
        """Check the config against itself, the files it names and the world size; returns the model config and
        tokenizer it resolves to. Raises ValueError with what to change. Starts no process group."""
        from megatron_ext.distributed import on_accelerator, validate_world
        from megatron_ext.models import RECOMPUTE
        from megatron_ext.training import parse_blend

        p, s, d = self.parallel, self.schedule, self.data
        check(self)  # every field's type and declared range
        self.logging.wandb.validate("logging.wandb")
        if self.model.hf_dir and self.optim == OptimConfig():
            o = self.optim
            raise ValueError(
                f"model.hf_dir={self.model.hf_dir!r} is a pretrained model, but optim.* are all the defaults for "
                f"training from random init (lr {o.lr}, warmup {o.warmup_iters}, weight decay {o.weight_decay}), "
                "which undo pretraining (SmolLM2-135M: validation loss 1.71 -> 1.98 in 3 steps): set a continued-"
                "pretraining schedule, e.g. optim.lr=1e-4 optim.min_lr=1e-5 (the Llama recipe: 5e-5 / 5e-6, warmup "
                "100)")
        dp = validate_world(world_size, p.tp, p.pp)
        for name in ("dtype", "use_distributed_optimizer", "overlap_grad_reduce"):
            allowed = ("auto", "bfloat16", "float32") if name == "dtype" else ("auto", "true", "false")
            if str(getattr(p, name)).lower() not in allowed:
                raise ValueError(f"parallel.{name}={getattr(p, name)!r}; valid: {list(allowed)}")
        if p.recompute not in RECOMPUTE:
            raise ValueError(f"parallel.recompute={p.recompute!r}; valid: {list(RECOMPUTE)}")
        if p.dtype == "bfloat16" and not _cuda():
            raise ValueError("parallel.dtype=bfloat16 needs a GPU; use float32 (or auto) on CPU")
        per_step = s.micro_batch_size * dp
        if s.global_batch_size % per_step:
            lower, upper = max(per_step, s.global_batch_size // per_step * per_step), (s.global_batch_size // per_step + 1) * per_step
            raise ValueError(
                f"schedule.global_batch_size={s.global_batch_size} is not divisible by schedule.micro_batch_size x "
                f"data-parallel size = {s.micro_batch_size} x {dp} = {per_step} (DP = {world_size} ranks / "
                f"(tp {p.tp} x pp {p.pp})): set global_batch_size to {lower} or {upper}, or change micro_batch_size")
        self.optim.validate(s.train_iters)
        if not d.blend:
            raise ValueError("data.blend is empty: give the tokenized dataset prefix(es) from "
                             "`python -m data_prep tokenize` (PREFIX for PREFIX.bin/.idx)")
        parse_blend(d.blend, "data.blend")
        if d.valid_blend:
            parse_blend(d.valid_blend, "data.valid_blend")
        elif s.eval_interval and s.eval_iters:
            from megatron.core.datasets.blended_megatron_dataset_config import parse_and_normalize_split

            try:
                shares = parse_and_normalize_split(d.split)
            except (AssertionError, ZeroDivisionError, ValueError):
                raise ValueError(f"data.split={d.split!r} is not 'train,valid,test' weights like '98,2,0'") from None
            if shares[1] == 0:
                raise ValueError(f"data.split={d.split!r} leaves no validation documents: give the second share a "
                                 "weight (e.g. '98,2,0'), set data.valid_blend, or schedule.eval_interval=0")
        if self.checkpoint.resume_from:
            path = explicit_checkpoint(self.checkpoint.resume_from)
            saved = json.loads((path / "trainer_state.json").read_text())
            distopt = flag(p.use_distributed_optimizer, on_accelerator() and dp > 1)
            problem = resume_incompatibility(saved, p.tp, p.pp, distopt)
            if problem:
                raise ValueError(f"checkpoint {path}: {problem}")
        return resolve_model(self, p.tp, p.pp)


@dataclass
class ResolvedModel:
    hf_config: object
    """The transformers LlamaConfig the run trains."""
    tokenizer_dir: str
    tokenizer: object
    eod_token_id: int


def resolve_model(cfg: PretrainConfig, tp: int, pp: int) -> ResolvedModel:
    from transformers import AutoConfig, AutoTokenizer

    from megatron_ext.models import check_architecture, validate_model_config
    from pipeline.model_presets import build_preset

    m = cfg.model
    if m.hf_dir and not (Path(m.hf_dir) / "config.json").is_file():
        raise ValueError(f"model.hf_dir={m.hf_dir!r} is not a Hugging Face model directory (no config.json); "
                         "leave it empty to start from model.preset")
    tokenizer_dir = m.tokenizer_dir or m.hf_dir
    if not tokenizer_dir:
        raise ValueError("model.tokenizer_dir is empty: give the tokenizer directory the data was tokenized with "
                         "(e.g. DATA/tokenizer from `python -m data_prep synthetic`)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    except (OSError, ValueError) as e:
        raise ValueError(f"model.tokenizer_dir={tokenizer_dir!r} holds no loadable tokenizer ({e})") from None
    if m.hf_dir:
        if m.overrides:
            raise ValueError("model.overrides apply to random init only; remove them when model.hf_dir is set")
        hf_config = AutoConfig.from_pretrained(m.hf_dir)
    else:
        hf_config = build_preset(m.preset, tokenizer=tokenizer, overrides=m.overrides)
    try:
        check_architecture(hf_config)
    except ValueError as e:
        raise ValueError(f"model {'hf_dir=' + repr(m.hf_dir) if m.hf_dir else 'preset=' + repr(m.preset)}: {e}") from None
    try:
        validate_model_config(hf_config, tp, pp)
    except ValueError as e:
        raise ValueError(f"parallel.tp={tp} / parallel.pp={pp} do not fit the model: {e}") from None
    if len(tokenizer) > hf_config.vocab_size:
        raise ValueError(f"the tokenizer in {tokenizer_dir} has {len(tokenizer)} tokens, more than the model's "
                         f"vocab_size {hf_config.vocab_size}: use the model's own tokenizer")
    eod = cfg.data.eod_token_id if cfg.data.eod_token_id >= 0 else _data_eod(cfg.data, tokenizer, tokenizer_dir)
    if cfg.data.seq_length > hf_config.max_position_embeddings:
        raise ValueError(f"data.seq_length={cfg.data.seq_length} exceeds the model's max_position_embeddings "
                         f"{hf_config.max_position_embeddings}")
    return ResolvedModel(hf_config, tokenizer_dir, tokenizer, int(eod))


def explicit_checkpoint(resume_from: str) -> Path:
    """The complete checkpoint `checkpoint.resume_from` names (an iter_* directory, or a root: its newest complete
    one); ValueError saying why when it is missing, incomplete or corrupt."""
    from megatron_ext.checkpoint import find_latest_checkpoint, validate_checkpoint_dir

    path = Path(resume_from)
    if not path.exists():
        raise ValueError(f"checkpoint.resume_from={resume_from!r} does not exist")
    if path.name.startswith("iter_"):
        return validate_checkpoint_dir(path)
    latest = find_latest_checkpoint(path, resume_option="checkpoint.resume_from")
    if latest is None:
        raise ValueError(f"checkpoint.resume_from={resume_from!r} holds no complete iter_* checkpoint")
    return latest


def resume_incompatibility(saved_trainer_state: dict, tp: int, pp: int, distributed_optimizer: bool) -> str | None:
    """Why a checkpoint (its trainer_state.json) cannot be resumed at this layout, or None when it can."""
    fmt = saved_trainer_state.get("optimizer_format", "model_space")
    layout = saved_trainer_state.get("layout", {})
    if (fmt != "model_space") != distributed_optimizer:
        want = "true" if fmt != "model_space" else "false"
        return (f"it was saved {'with' if want == 'true' else 'without'} the distributed optimizer, whose state "
                f"format differs: set parallel.use_distributed_optimizer={want}")
    if fmt == "dp_reshardable" and (layout.get("tp"), layout.get("pp")) != (tp, pp):
        return (f"its distributed-optimizer state was saved per rank at tp={layout.get('tp')} pp={layout.get('pp')} "
                f"(dp_reshardable): resume at that tp/pp (any DP), or save with checkpoint.reshardable_optimizer=true "
                "on GPU")
    return None


def flag(value: str, auto: bool) -> bool:
    """Resolve an 'auto' / 'true' / 'false' setting."""
    value = str(value).lower()
    return auto if value == "auto" else value == "true"


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _data_eod(data: DataConfig, tokenizer, tokenizer_dir: str) -> int:
    """The document separator the blend's .bin files were written with (their .summary.json), else the model's;
    a blend of corpora tokenized by different tokenizers is refused."""
    from data_prep.tokenize_corpus import resolve_eod
    from megatron_ext.training import parse_blend

    recorded, tokenizers = {}, {}
    for blend, field_name in ((data.blend, "data.blend"), (data.valid_blend, "data.valid_blend")):
        for prefix in parse_blend(blend, field_name)[0] if blend else []:
            summary = Path(f"{prefix}.summary.json")
            written = json.loads(summary.read_text()).get("tokenizer", {}) if summary.is_file() else {}
            if written.get("eod_id") is not None:
                recorded[prefix] = int(written["eod_id"])
            if written.get("sha256"):
                tokenizers[prefix] = written["sha256"][:12]
    if len(set(tokenizers.values())) > 1:
        raise ValueError(f"the blend mixes corpora tokenized with different tokenizers (sha256 {tokenizers}): "
                         "re-tokenize them with the model's tokenizer (python -m data_prep tokenize --tokenizer ...)")
    if len(set(recorded.values())) > 1:
        raise ValueError(f"the blend's corpora end documents with different tokens {recorded}: re-tokenize them with "
                         "one --eod-token, or set data.eod_token_id")
    if recorded:
        return next(iter(recorded.values()))
    try:
        return resolve_eod(tokenizer, None)
    except ValueError:
        raise ValueError(f"the tokenizer in {tokenizer_dir} has no eos token: set data.eod_token_id to the id that "
                         "separates documents in the .bin files") from None
