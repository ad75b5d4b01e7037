"""Converters between the community's PyTorch checkpoint formats and animatediff_jax Flax pytrees."""

import sys

if sys.argv[:1] == ["-m"]:  # `python -m convert...` while the command's module is being found and imported
    from animatediff_jax.start_up import stop_cleanly_during_start_up
    stop_cleanly_during_start_up()
