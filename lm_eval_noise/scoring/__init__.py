"""Scoring answers under a reference model: `reference` (loading a model, batched
log-probs of responses given prompts) and `self_scoring` (how hf-noise scores its own
answers for a task that asks it to). Imports no lm_eval."""
