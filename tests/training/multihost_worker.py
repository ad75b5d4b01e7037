"""One host of a two-process training run (spawned by test_multihost_training.py).

    python -m tests.training.multihost_worker PORT PROCESS_ID WORKDIR OUT.npz key=value ...

PORT 0 runs alone (no jax.distributed): the single-process reference.
"""
import os
import sys

import jax
import numpy as np

jax.config.update("jax_default_matmul_precision", "highest")


def main(port: str, process_id: str, workdir: str, out: str, *overrides: str) -> None:
    from animatediff_jax.params import flatten
    from animatediff_jax.training import trainer
    from animatediff_jax.training.config import load_config
    distributed = [f"distributed.coordinator_address=127.0.0.1:{port}", "distributed.num_processes=2",
                   f"distributed.process_id={process_id}"] if int(port) else []
    cfg = load_config(None, list(overrides) + distributed)
    result = trainer.train(cfg, workdir)
    np.savez(out, **{"/".join(p): v for p, v in flatten(result["params"]).items()},
             _local_devices=np.int32(jax.local_device_count()), _loss=np.float64(result["loss"]))


if __name__ == "__main__":
    assert "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
    main(*sys.argv[1:])
