"""A stand-in for `sample.load_pipeline` for tests of validation: it records each validated job and
raises `Validated` instead of loading a model."""
from animatediff_jax import sample


class Validated(Exception):
    """Raised in place of loading a model: validation passed."""


def stop_at_load(monkeypatch) -> list:
    """Replace `sample.load_pipeline` (for the test's duration); the jobs that reached it, in order."""
    jobs = []

    def load(job):
        jobs.append(job)
        raise Validated
    monkeypatch.setattr(sample, "load_pipeline", load)
    return jobs
