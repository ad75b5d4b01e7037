"""Progress bars (tqdm, on stderr) that end their own line.

A bar is a context manager around the work it measures, so it is closed when that work ends, normally
or by an exception, before anything else is printed. Closing keeps the bar's last state and ends its
line with a newline (`leave=True`): a bar cleared instead (`leave=False`) leaves the cursor on its own
line, and a log or pipe then shows the next line (an output path, an `error:`) glued to the bar.
A bar opened inside a generator is closed only when that generator is, which an exception in its
consumer delays: open the bar where the generator is consumed and pass it in.
"""
from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm


def progress_bar(desc: str, *, total: float | None = None, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar labelled `desc` (nothing shown unless `enabled`), to be used as `with progress_bar(...)
    as bar:`, advanced with `bar.update(n)`; `kwargs` go to tqdm (`unit`, `unit_scale`)."""
    return tqdm(total=total, desc=desc, disable=not enabled, leave=True, **kwargs)
