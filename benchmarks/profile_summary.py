"""Where a profiled JAX program spends its time: a Markdown summary of a `jax.profiler` trace (.xplane.pb).

    python -m benchmarks.profile_summary TRACE.xplane.pb [--top 40]

For each device plane (a GPU's `/device:GPU:0`; the host's XLA threads where there is no device plane):
the busy time of each timeline, and over the kernel timelines (a GPU's streams) the kernels grouped by the HLO instruction that launched them
(`hlo_op` stat, its trailing `.N` removed: `fusion`, `loop_add_fusion`, `cudnn-conv`, ...), and the top
kernels by total time. Read with jaxlib's own `ProfileData`, so it needs nothing beyond JAX.
"""
from __future__ import annotations

import argparse
import collections
import re

from jax.profiler import ProfileData

_SUFFIX = re.compile(r"(\.\d+)+$")


def _rows(totals: dict, counts: dict, whole: float, top: int) -> list[str]:
    out = []
    for name, ns in sorted(totals.items(), key=lambda kv: -kv[1])[:top]:
        out.append(f"| {name[:110]} | {ns / 1e6:.2f} | {counts[name]} | {ns / whole:.1%} |")
    return out


def summarize(path: str, top: int = 40) -> str:
    """Markdown tables of one trace file. Durations are summed over the whole trace (divide by the steps
    it holds for per-step figures); shares are of the plane's summed kernel time."""
    data = ProfileData.from_file(path)
    planes = [p for p in data.planes if p.name.startswith("/device:")]
    if not planes:
        planes = [p for p in data.planes if p.name == "/host:CPU"]
    out = []
    for plane in planes:
        by_op, by_kernel = collections.Counter(), collections.Counter()
        n_op, n_kernel = collections.Counter(), collections.Counter()
        lines = []
        streams = any(line.name.startswith("Stream") for line in plane.lines)
        for line in plane.lines:
            if line.name == "python":
                continue
            events = [e for e in line.events if e.duration_ns > 0]
            if not events:
                continue
            start = min(e.start_ns for e in events)
            end = max(e.start_ns + e.duration_ns for e in events)
            busy = sum(e.duration_ns for e in events)
            lines.append(f"| {line.name[:60]} | {len(events)} | {busy / 1e6:.2f} | {(end - start) / 1e6:.2f} |")
            if streams and not line.name.startswith("Stream"):
                continue  # a GPU's derived timelines ("XLA Ops", "XLA Modules") repeat its streams' kernels
            for e in events:
                stats = dict(e.stats)
                op = _SUFFIX.sub("", str(stats.get("hlo_op", "(no hlo_op)")))
                by_op[op] += e.duration_ns
                n_op[op] += 1
                by_kernel[e.name] += e.duration_ns
                n_kernel[e.name] += 1
        whole = sum(by_kernel.values()) or 1.0
        out += [f"## {plane.name}", "", "| timeline | events | busy ms | first to last ms |", "|---|---|---|---|",
                *lines, "", f"Kernel time in all: {whole / 1e6:.2f} ms.", "",
                "| HLO instruction kind | ms | kernels | share |", "|---|---|---|---|",
                *_rows(by_op, n_op, whole, top), "",
                "| kernel | ms | calls | share |", "|---|---|---|---|", *_rows(by_kernel, n_kernel, whole, top), ""]
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("trace", help="a .xplane.pb file written by jax.profiler")
    p.add_argument("--top", type=int, default=40, help="rows per table")
    args = p.parse_args(argv)
    print(summarize(args.trace, args.top))


if __name__ == "__main__":
    main()
