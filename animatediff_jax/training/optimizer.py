"""The optimizer of the paper's training: AdamW with global-norm clipping and an LR schedule.

Built only over the trainable subtree, so frozen leaves have no optimizer state at all. Gradient
accumulation is not done here: the train step averages gradients over micro-batches (a `lax.scan`)
before one optimizer update, so an accumulated step equals the large-batch step.
"""
from __future__ import annotations

import optax

from animatediff_jax.training.config import LR_SCHEDULERS


def learning_rate_schedule(learning_rate: float, lr_scheduler: str = "constant",
                           lr_warmup_steps: int = 0, max_train_steps: int = 1) -> optax.Schedule:
    """Linear warmup from 0 over `lr_warmup_steps`, then constant, cosine or linear decay to 0."""
    if lr_scheduler not in LR_SCHEDULERS:
        raise ValueError(f"lr_scheduler must be one of {LR_SCHEDULERS}, got {lr_scheduler!r}")
    decay_steps = max(max_train_steps - lr_warmup_steps, 1)
    if lr_scheduler == "constant":
        after = optax.constant_schedule(learning_rate)
    elif lr_scheduler == "cosine":
        after = optax.cosine_decay_schedule(learning_rate, decay_steps)
    else:
        after = optax.linear_schedule(learning_rate, 0.0, decay_steps)
    if lr_warmup_steps <= 0:
        return after
    warmup = optax.linear_schedule(0.0, learning_rate, lr_warmup_steps)
    return optax.join_schedules([warmup, after], [lr_warmup_steps])


def make_optimizer(learning_rate: float = 1e-4, adam_beta1: float = 0.9, adam_beta2: float = 0.999,
                   adam_weight_decay: float = 1e-2, adam_epsilon: float = 1e-8,
                   max_grad_norm: float = 1.0, lr_scheduler: str = "constant",
                   lr_warmup_steps: int = 0, max_train_steps: int = 1
                   ) -> optax.GradientTransformation:
    """clip_by_global_norm(max_grad_norm) -> AdamW (torch.optim.AdamW semantics, decoupled decay)."""
    schedule = learning_rate_schedule(learning_rate, lr_scheduler, lr_warmup_steps, max_train_steps)
    parts = [optax.clip_by_global_norm(max_grad_norm)] if max_grad_norm and max_grad_norm > 0 else []
    parts.append(optax.adamw(schedule, b1=adam_beta1, b2=adam_beta2, eps=adam_epsilon,
                             weight_decay=adam_weight_decay))
    return optax.chain(*parts)
