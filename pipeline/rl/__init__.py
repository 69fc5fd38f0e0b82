"""Stage two: Dr. GRPO with Megatron learners and vLLM rollouts.

Import submodules directly (``pipeline.rl.reward``, ``pipeline.rl.loss``, ...): this package imports nothing,
so the reward's grading processes never pull in torch.
"""
