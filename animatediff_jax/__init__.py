"""AnimateDiff in JAX/Flax: inflated SD1.x UNet + motion modules, training, sampling."""

__version__ = "0.1.0"

import sys

if sys.argv[:1] == ["-m"]:  # `python -m animatediff_jax...` while the command's module is being found and imported
    from animatediff_jax.start_up import stop_cleanly_during_start_up
    stop_cleanly_during_start_up()
