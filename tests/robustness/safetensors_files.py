"""Small valid `.safetensors` files and their raw parts, for the reader's robustness tests."""
from __future__ import annotations

import json
import struct

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file


def tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"a.weight": rng.standard_normal((3, 4)).astype(np.float32),
            "b.bias": rng.standard_normal(5).astype(np.float16),
            "c": rng.standard_normal((2, 2)).astype(ml_dtypes.bfloat16),
            "ids": np.arange(6, dtype=np.int64).reshape(1, 6),
            "empty": np.zeros((0, 3), np.float32)}


def write_valid(path: str, metadata: dict[str, str] | None = None) -> str:
    save_file(tensors(), path, metadata=metadata or {"format": "pt"})
    return path


def split(path: str) -> tuple[dict, bytes]:
    """(header JSON object, data buffer) of a safetensors file."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def join(path: str, header: dict | bytes, data: bytes) -> str:
    """Write a file from a header (object or raw JSON bytes) and a data buffer."""
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob + data)
    return path
