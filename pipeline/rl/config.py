"""Stage-two (Dr. GRPO) settings: the one place their defaults live.

Defaults are the paper's (Oat-Zero, arXiv 2503.20783 and sail-sg/understand-r1-zero): lr 1e-6 constant,
AdamW (0.9, 0.95), no weight decay, grad clip 1.0, G=8 samples per question, 128 questions per step and 8
optimizer steps per step (train_batch_size 128), temperature 1.0, top-p 1.0, 3000 new tokens, 1024 prompt tokens,
eps 0.2, no KL, algorithm dr_grpo. The tiny CPU recipe overrides the sizes (and trains once per rollout).
"""

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from cli.config import at_least, build, check
from data_prep.templates import check_template
from megatron_ext.models import RECOMPUTE
from pipeline.metrics import WandbConfig
from pipeline.rl.loss import AGGREGATIONS

ALGORITHMS: dict[str, tuple[str, bool]] = {
    "dr_grpo": ("dr_grpo", False),
    "grpo": ("grpo", True),
    "token_mean": ("token_mean", True),
}
"""algorithm -> (aggregation, std_normalize)."""


RENAMED = {"generator": "engine", "generator_options": "engine_options"}
"""Fields of earlier versions under their new names (a config that uses the old one is refused, naming the new)."""
TRAJECTORY_FIELDS = (
    "model_dir", "train_questions", "train_levels", "template", "system_prompt", "verifier", "seed",
    "questions_per_step", "group_size", "max_new_tokens", "max_prompt_tokens", "temperature", "top_p", "algorithm",
    "aggregation", "std_normalize", "clip_eps", "kl_coef", "ppo_epochs", "minibatches_per_step", "tis_cap",
    "behaviour_logprobs", "lr", "adam_betas", "adam_eps", "weight_decay", "grad_clip", "bf16",
)
"""Settings a resumed run must keep (the rest: steps, evaluation, checkpointing, layout, memory options, may change)."""


@dataclass
class RLConfig:
    # ---- inputs and outputs
    model_dir: str = ""
    """HF directory of the starting policy (stage one's export), with its tokenizer."""
    output_dir: str = "outputs/rl"
    """Checkpoints, metrics.jsonl, tensorboard/, generations.jsonl and the final HF export go here."""
    train_questions: str = ""
    """Training questions: a jsonl of {question, answer}, or 'math:PATH' / 'gsm8k:PATH' (see data_prep.questions)."""
    train_levels: tuple[int, ...] = ()
    """Keep only these difficulty levels (MATH levels 3-5 in the paper); empty keeps all."""
    test_questions: str = ""
    """Held-out questions for periodic greedy evaluation (same formats); empty disables evaluation."""
    template: str = "qwen_math"
    """Prompt template: r1, qwen_math, none, or chat (the model's own chat template) (data_prep.templates)."""
    system_prompt: str = ""
    """With template=chat: a system turn before the question (empty: none, or the chat template's own default)."""
    verifier: str = "fast"
    """Answer grader (pipeline.rl.reward): fast (the authors' training verifier of their 1.5B and Llama runs),
    math_verify (their 7B run's) or lenient (this project's earlier, more accepting grader)."""
    seed: int = 42

    # ---- rollouts
    engine: str = "auto"
    """Rollout engine: vllm, torch, auto (vLLM on a GPU where importable, else torch) or 'module:Class'."""
    engine_options: dict = field(default_factory=dict)
    """Engine-specific settings, e.g. vLLM's {'gpu_memory_utilization': 0.35}, the torch engine's
    {'batch_size': 256, 'fused_kernels': True}."""
    questions_per_step: int = field(default=128, metadata=at_least(1))
    """Questions sampled per RL step (the rollout batch)."""
    group_size: int = field(default=8, metadata=at_least(2, "a group of one sample has zero advantage: nothing is learned"))
    """Responses per question (G)."""
    max_new_tokens: int = field(default=3000, metadata=at_least(1))
    """Generation budget; also the constant Dr. GRPO normaliser. Truncated responses get reward 0."""
    max_prompt_tokens: int = field(default=1024, metadata=at_least(1))
    """Longer prompts are dropped from the question set at start-up (counted in the log)."""
    temperature: float = field(default=1.0, metadata=at_least(0.0))
    top_p: float = 1.0

    # ---- algorithm
    algorithm: str = "dr_grpo"
    """The algorithm, one switch (ALGORITHMS): dr_grpo (the paper's: advantages R - mean, token losses summed per
    response / max_new_tokens), grpo (advantages also / std, token losses averaged per response: the length-biased
    original), token_mean (DAPO: std-normalised advantages, token losses averaged over the step's tokens). It sets
    `aggregation` and `std_normalize`, which stay for ablations (a mix that is no named algorithm is warned about)."""
    aggregation: str = ""
    """Token-loss aggregation (pipeline.rl.loss.AGGREGATIONS); empty: the algorithm's."""
    std_normalize: bool | None = None
    """Divide advantages by the per-question reward std; None: the algorithm's (GRPO and DAPO do, Dr. GRPO not)."""
    clip_eps: float = field(default=0.2, metadata=at_least(0.0))
    kl_coef: float = field(default=0.0, metadata=at_least(0.0))
    """KL to the frozen initial policy (k3 estimator); 0 in the paper, and then no reference model is built."""
    ppo_epochs: int = field(default=1, metadata=at_least(1))
    minibatches_per_step: int = field(default=8, metadata=at_least(1))
    """Optimizer steps per RL step, each on a 1/minibatches share of the responses. The authors' schedule: 128
    questions x 8 samples, train_batch_size 128, i.e. 8 steps per rollout, so the PPO ratio and clip act from the
    second step on (with 1 the update is on-policy: ratio 1, clip inert)."""
    tis_cap: float = field(default=0.0, metadata=at_least(0.0))
    """Truncated importance sampling against the rollout engine: each token's surrogate is weighted by
    min(pi_learner / pi_engine, tis_cap), correcting the engine's sampling mismatch (bf16 vLLM kernels vs the
    learner; oat's tis_c, verl's). 0: off, as in the paper. train/logp_mismatch{,_max,_p99} show the mismatch."""
    behaviour_logprobs: str = "learner"
    """Old log-probs of the PPO ratio: 'learner' (the learner's own: recomputed before the updates, or with one
    update per step that update's forward pass, detached) or 'engine' (from sampling)."""

    # ---- optimisation
    lr: float = field(default=1e-6, metadata=at_least(0.0))
    adam_betas: tuple[float, float] = (0.9, 0.95)
    adam_eps: float = 1e-8
    weight_decay: float = field(default=0.0, metadata=at_least(0.0))
    grad_clip: float = field(default=1.0, metadata=at_least(0.0))
    bf16: bool = True
    """bf16 learner on GPU (fp32 master weights); CPU always runs fp32."""

    # ---- parallelism
    tp: int = field(default=1, metadata=at_least(1))
    pp: int = field(default=1, metadata=at_least(1))
    micro_batch_size: int = field(default=8, metadata=at_least(1))
    """Responses per forward/backward micro-batch on each data-parallel rank."""
    shared_prompt_update: bool = True
    """Run each group's prompt once in the update, its G responses attending to that one copy
    (megatron_ext.shared_prefix): the same loss and gradients for 1/G of the prompt's compute. Applies when
    micro-batches hold whole groups and the learner has Megatron's local layers (CPU); otherwise one row per
    response, as with False."""
    threads_per_rank: int = field(default=0, metadata=at_least(0))
    """torch threads per rank on CPU (0: cores / ranks)."""

    # ---- memory (bench.memory_plan predicts a recipe's peak with these)
    recompute: str = "none"
    """Activation recomputation in the update (Megatron's): none; selective (core attention recomputed); full (each
    layer keeps only its input and recomputes the rest in backward: ~a third more compute, a small fraction of the
    activation memory). Same loss and gradients."""
    logprob_chunk_tokens: int = field(default=4096, metadata=at_least(0))
    """Log-probs and entropy from the logits this many tokens at a time, never fp32 [tokens, vocabulary] at once
    (0: all at once). Same values and gradients."""
    trim_microbatch_padding: bool = True
    """Cut each per-response micro-batch after its own longest row instead of the step's (PP = 1 only: pipeline
    stages exchange one shape). Same loss and gradients, less compute and memory for short rows."""
    grad_reduce_in_fp32: bool = True
    """Gradient buffer and data-parallel reduction in fp32 (Megatron's default). False keeps them in the learner's
    bf16 on GPU: half the gradient memory (15 GiB less for a 7B model) at bf16 rounding of the summed gradient; the
    optimizer still steps fp32 main weights. CPU runs fp32 either way."""

    # ---- schedule
    steps: int = field(default=500, metadata=at_least(1))
    eval_every: int = field(default=25, metadata=at_least(0))
    """Greedy evaluation on test_questions every this many steps (and before the first and after the last); 0: only
    before the first and after the last."""
    eval_max_questions: int = field(default=0, metadata=at_least(0))
    """Evaluate on at most this many test questions (0: all)."""
    checkpoint_every: int = field(default=50, metadata=at_least(1))
    """Save a checkpoint every this many steps (and after the last one, or when a signal stops the run)."""
    keep_checkpoints: int = field(default=2, metadata=at_least(1))
    """Keep the newest this many checkpoints; older ones are deleted."""
    exit_duration_min: float = field(default=0.0, metadata=at_least(0.0))
    """Save and exit cleanly after this many minutes (0: no limit); SLURM's USR1/TERM do the same."""
    resume_from: str = ""
    """An iter_* checkpoint directory to resume from instead of the newest under output_dir/checkpoints (e.g. the
    previous one when the newest is damaged: the run refuses a damaged one and names the good one before it)."""
    grader_workers: int = field(default=1, metadata=at_least(1))
    """Grading worker processes per rank."""
    grade_timeout_s: float = field(default=1.0, metadata=at_least(0.0))
    """Hard limit per graded answer (the authors use 1 s); a timeout scores 0 and is counted."""
    log_generations: int = 4
    """Responses per step written to generations.jsonl (all of them: -1)."""
    wandb: WandbConfig = field(default_factory=WandbConfig)
    """Weights & Biases as a third metrics sink (off unless `wandb.project` is set)."""

    def __post_init__(self):
        if self.algorithm in ALGORITHMS:
            aggregation, std_normalize = ALGORITHMS[self.algorithm]
            self.aggregation = self.aggregation or aggregation
            self.std_normalize = std_normalize if self.std_normalize is None else self.std_normalize

    def ablation(self) -> str | None:
        """A note when `aggregation` / `std_normalize` were set to a mix that is not `algorithm` (None otherwise)."""
        if self.algorithm in ALGORITHMS and (self.aggregation, self.std_normalize) != ALGORITHMS[self.algorithm]:
            named = [name for name, knobs in ALGORITHMS.items() if knobs == (self.aggregation, self.std_normalize)]
            return (f"aggregation={self.aggregation!r} std_normalize={self.std_normalize} is not algorithm="
                    f"{self.algorithm!r} " + (f"but algorithm={named[0]!r}" if named else
                                              "nor any named algorithm: an ablation"))
        return None

    def validate(self, world_size: int, *, check_files: bool = True) -> None:
        """Raise ValueError with the fix, before any process group or model is built. `check_files=False` checks
        only the settings (a recipe validating before earlier stages have written their outputs)."""
        check(self)  # every field's type (a JSON "false" is a non-empty string, which Python reads as true) and range
        if check_files and (not self.model_dir or not (Path(self.model_dir) / "config.json").exists()):
            raise ValueError(f"model_dir={self.model_dir!r} is not a Hugging Face model directory (no config.json)")
        if not self.train_questions:
            raise ValueError("train_questions is empty: point it at a jsonl of {question, answer} or 'math:PATH'")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm={self.algorithm!r}; valid: {sorted(ALGORITHMS)}")
        check_template(self.template, self.system_prompt, self.model_dir if check_files else None)
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation={self.aggregation!r}; valid: {sorted(AGGREGATIONS)}")
        if self.behaviour_logprobs not in ("learner", "engine"):
            raise ValueError("behaviour_logprobs must be 'learner' or 'engine'")
        if world_size % (self.tp * self.pp):
            raise ValueError(f"world size {world_size} is not divisible by tp x pp = {self.tp} x {self.pp}")
        dp = world_size // (self.tp * self.pp)
        responses = self.questions_per_step * self.group_size
        if responses % (dp * self.minibatches_per_step * self.micro_batch_size):
            raise ValueError(
                f"questions_per_step x group_size = {responses} responses must split evenly into dp ({dp}) x "
                f"minibatches_per_step ({self.minibatches_per_step}) x micro_batch_size ({self.micro_batch_size})"
            )
        if self.questions_per_step % world_size:
            raise ValueError(f"questions_per_step={self.questions_per_step} must be divisible by the number of "
                             f"ranks ({world_size}): every rank's rollout engine samples an equal share")
        from pipeline.rl.grading import VERIFIERS  # sympy and math-verify: not at import time of the config

        if self.verifier not in VERIFIERS:
            raise ValueError(f"verifier={self.verifier!r}; valid: {sorted(VERIFIERS)}")
        if self.recompute not in RECOMPUTE:
            raise ValueError(f"recompute={self.recompute!r}; valid: {list(RECOMPUTE)}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p!r} must be in (0, 1]")
        self.wandb.validate("wandb")

    def resume_changes(self, saved: dict) -> list[str]:
        """The settings that shape the trajectory (`TRAJECTORY_FIELDS`) and differ from the run being resumed (its
        rl_config.json), as 'field: saved -> now'."""
        now = json.loads(self.to_json())
        return [f"{name}: {saved.get(name)!r} -> {now[name]!r}" for name in TRAJECTORY_FIELDS
                if name in saved and saved[name] != now[name]]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_dict(cls, values: dict) -> "RLConfig":
        """From a config file's object and `Text` overrides (cli.config): every value read by its field's type."""
        renamed = [f"{old} is now {new}" for old, new in RENAMED.items() if old in values]
        if renamed:
            raise ValueError(f"renamed fields: {'; '.join(renamed)} (one name for the rollout engine everywhere)")
        return build(cls, values)
