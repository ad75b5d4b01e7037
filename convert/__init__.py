"""Converters between the community's PyTorch checkpoint formats and animatediff_jax Flax pytrees."""
