"""benchmarks/profile_summary.py on a GPU-shaped trace: kernels summed over the streams only (a GPU trace's
derived "XLA Ops" timeline repeats them), grouped by the HLO instruction that launched them."""
from jax.profiler import ProfileData

from benchmarks.profile_summary import summarize

# 3 ms + 2 ms of loop_add_fusion (two instructions of one kind), 1 ms of cuDNN attention, a 1 ms gap;
# the derived "XLA Ops" line repeats the first kernel and must not be counted twice
TRACE = """
planes {
  name: "/device:GPU:0"
  lines { name: "Stream #14(Compute)" timestamp_ns: 1000
    events { metadata_id: 1 offset_ps: 0 duration_ps: 3000000000 stats { metadata_id: 10 str_value: "loop_add_fusion.3" } }
    events { metadata_id: 3 offset_ps: 3000000000 duration_ps: 2000000000 stats { metadata_id: 10 str_value: "loop_add_fusion.12" } }
    events { metadata_id: 2 offset_ps: 6000000000 duration_ps: 1000000000 stats { metadata_id: 10 str_value: "custom-call.7" } }
  }
  lines { name: "XLA Ops" timestamp_ns: 1000
    events { metadata_id: 1 offset_ps: 0 duration_ps: 3000000000 }
  }
  event_metadata { key: 1 value { id: 1 name: "loop_add_fusion_3" } }
  event_metadata { key: 2 value { id: 2 name: "sdpa_flash_fprop" } }
  event_metadata { key: 3 value { id: 3 name: "loop_add_fusion_12" } }
  stat_metadata { key: 10 value { id: 10 name: "hlo_op" } }
}
"""


def test_gpu_trace_counts_stream_kernels_once_grouped_by_instruction_kind(tmp_path):
    path = tmp_path / "t.xplane.pb"
    path.write_bytes(ProfileData.text_proto_to_serialized_xspace(TRACE))
    summary = summarize(str(path))
    assert "| Stream #14(Compute) | 3 | 6.00 | 7.00 |" in summary  # busy 6 ms over a 7 ms window
    assert "Kernel time in all: 6.00 ms." in summary  # not 9: the XLA Ops line is not added
    assert "| loop_add_fusion | 5.00 | 2 | 83.3% |" in summary
    assert "| custom-call | 1.00 | 1 | 16.7% |" in summary
    assert "| sdpa_flash_fprop | 1.00 | 1 | 16.7% |" in summary
