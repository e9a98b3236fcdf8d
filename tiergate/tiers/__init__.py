"""Where answers come from: `upstream` (any OpenAI-compatible HTTP endpoint), `local_lm` (an in-process causal
LM, optionally with a LoRA adapter) and `classifier` (an in-process fine-tuned classifier).

Every tier implements `tiergate.tiers.base.Tier`; `tiergate.tiers.registry` maps kinds to classes and imports
them lazily, so the gateway imports torch only when a local tier is configured.
"""
