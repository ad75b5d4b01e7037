"""WebVid TFDS builder on tiny real mp4 files: clips, captions, bad input counted, never a crash."""
import csv
import json

import numpy as np
import pytest

from animatediff_jax.data import build
from animatediff_jax.data.pipeline import load_source
from animatediff_jax.data.webvid import WebVid, WebVidConfig, read_csv
from animatediff_jax.errors import run_cli
from tests.data.video_files import ramp_video, write_empty_mp4, write_mp4

FRAMES, STRIDE, SIZE = 4, 2, 16


def _write_csv(path, rows, columns=("videoid", "name", "page_dir")):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


@pytest.fixture(scope="module")
def webvid_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("webvid")
    videos = root / "videos"
    (videos / "page7").mkdir(parents=True)
    good = {"1001": ((12, 24, 32), "a dog runs on the beach"),
            "1002": ((10, 40, 24), "clouds over mountains, timelapse"),
            "1003": ((3, 16, 16), "a very short video")}  # shorter than FRAMES: frames spread, some repeated
    for vid, ((n, h, w), _) in good.items():
        write_mp4(videos / f"{vid}.mp4", ramp_video(n, h, w, step=15))
    write_mp4(videos / "page7" / "1004.mp4", ramp_video(9, 20, 20, step=15))  # found under page_dir
    (videos / "2001.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)  # corrupt
    write_empty_mp4(videos / "2002.mp4")  # no frame at all
    rows = [{"videoid": v, "name": c, "page_dir": "page0"} for v, (_, c) in good.items()]
    rows += [{"videoid": "1004", "name": "street at night", "page_dir": "page7"},
             {"videoid": "2001", "name": "corrupt file", "page_dir": ""},
             {"videoid": "2002", "name": "empty file", "page_dir": ""},
             {"videoid": "2003", "name": "file that does not exist", "page_dir": ""},
             {"videoid": "1001", "name": "duplicate row", "page_dir": ""},
             {"videoid": "2004", "name": "   ", "page_dir": ""},
             {"videoid": "", "name": "no id", "page_dir": ""}]
    _write_csv(root / "results.csv", rows)
    captions = {v: c for v, (_, c) in good.items()} | {"1004": "street at night"}
    return root, captions


def _build(root, tmp_path, **kw):
    config = WebVidConfig(name="tiny", csv_path=str(root / "results.csv"), video_dir=str(root / "videos"),
                          frames=FRAMES, stride=STRIDE, size=SIZE, num_workers=2, **kw)
    builder = WebVid(config=config, data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare()
    return builder


def test_builds_clips_and_counts_bad_input(webvid_files, tmp_path):
    root, captions = webvid_files
    builder = _build(root, tmp_path, min_frames=1)  # 1003 kept (default: skipped as too short)
    source = load_source(builder.data_dir)  # the directory the real pipeline reads, no TF
    got = {}
    for i in range(len(source)):
        ex = source[i]
        video = ex["video"]
        assert video.shape == (FRAMES, SIZE, SIZE, 3) and video.dtype == np.uint8
        # Frames are the ramp's levels (level(i) = 20 + 15 i): consecutive samples 2 frames apart,
        # or spread over the whole video when it is shorter than the window.
        source_frames = np.rint((video.astype(float).mean(axis=(1, 2, 3)) - 20) / 15)
        vid = ex["videoid"].decode()
        if vid == "1003":
            np.testing.assert_array_equal(source_frames, np.linspace(0, 2, FRAMES, dtype=int))
        else:
            assert np.all(np.diff(source_frames) == STRIDE), (vid, source_frames)
        got[vid] = ex["caption"].decode()
    assert got == captions
    stats = json.loads((builder.data_path / "metadata.json").read_text())["build_stats"]
    assert stats["clips"] == 4 and stats["slowed_clips"] == 0
    assert stats["padded_clips"] == 1 and stats["padded_videos"] == {"1003": 3}
    assert stats["skipped"] == {"unreadable": 1, "no_video_stream": 1, "missing_file": 1, "duplicate_videoid": 1,
                                "empty_caption": 1, "missing_videoid": 1}


def test_min_frames_skips_too_short_and_build_is_deterministic(webvid_files, tmp_path):
    root, _ = webvid_files
    a = load_source(_build(root, tmp_path / "a", min_frames=4).data_dir)
    b = load_source(_build(root, tmp_path / "b", min_frames=4).data_dir)
    assert len(a) == 3
    for i in range(len(a)):
        assert a[i]["videoid"] == b[i]["videoid"] and np.array_equal(a[i]["video"], b[i]["video"])
        assert a[i]["videoid"] != b"1003"


def test_bad_csv_errors_name_the_problem(tmp_path):
    (tmp_path / "videos").mkdir()
    _write_csv(tmp_path / "nocaption.csv", [{"videoid": "1"}], columns=("videoid", "page_dir"))
    with pytest.raises(ValueError, match=r"nocaption.csv: missing CSV column\(s\) \['name'\]"):
        read_csv(str(tmp_path / "nocaption.csv"), str(tmp_path / "videos"))
    (tmp_path / "videos" / "9.mp4").write_bytes(b"not a video")
    _write_csv(tmp_path / "results.csv", [{"videoid": "9", "name": "broken"}, {"videoid": "8", "name": ""}])
    config = WebVidConfig(name="bad", csv_path=str(tmp_path / "results.csv"), video_dir=str(tmp_path / "videos"))
    builder = WebVid(config=config, data_dir=str(tmp_path / "tfds"))
    with pytest.raises(ValueError, match="no usable video") as e:
        builder.download_and_prepare()
    assert "unreadable" in str(e.value) and "empty_caption" in str(e.value)
    assert not (tmp_path / "tfds" / "webvid" / "bad" / "1.0.0" / "dataset_info.json").exists()


def test_build_cli(webvid_files, tmp_path, capsys):
    root, captions = webvid_files
    out = build.main(["webvid", "--csv", str(root / "results.csv"), "--video_dir", str(root / "videos"),
                      "--data_dir", str(tmp_path / "tfds"), "--name", "cli", "--frames", "3", "--size", "8",
                      "--workers", "1", "--num_shards", "2"])
    printed = capsys.readouterr().out
    assert '"clips": 4' in printed and '"unreadable": 1' in printed and out in printed
    data = load_source(out)
    assert len(data) == 4 and data[0]["video"].shape == (3, 8, 8, 3)
    assert {data[i]["caption"].decode() for i in range(4)} == set(captions.values())
    images = load_source(build.main(["procedural", "--data_dir", str(tmp_path / "tfds"), "--name", "img",
                                     "--num_examples", "3", "--size", "16", "--images", "--trigger", "sks"]))
    assert images[0]["video"].shape == (1, 16, 16, 3) and images[0]["caption"].decode().startswith("sks, a")
    assert "moving" not in images[0]["caption"].decode()


def _build_cli(root, tmp_path, num_shards: int) -> int:
    return run_cli(lambda: build.main(["webvid", "--csv", str(root / "results.csv"), "--video_dir", str(root / "videos"),
                                       "--data_dir", str(tmp_path / "tfds"), "--name", "s", "--frames", "3", "--size",
                                       "8", "--workers", "1", "--num_shards", str(num_shards)]) and 0)


def test_more_shards_than_usable_rows_is_refused_before_decoding(webvid_files, tmp_path, capsys, monkeypatch):
    """Was a TFDS AssertionError traceback (num_examples < number_of_shards) once every video was decoded."""
    monkeypatch.setattr(WebVid, "download_and_prepare", lambda *a, **k: pytest.fail("built"))
    root, _ = webvid_files
    assert _build_cli(root, tmp_path, 7) == 2
    assert capsys.readouterr().err == (f"error: --num_shards 7: more than the 6 usable rows of --csv {root / 'results.csv'} "
                                       "(rows with a caption and a video file; every ArrayRecord file needs a clip)\n")
    assert not (tmp_path / "tfds").exists()


def test_more_shards_than_decodable_clips_is_one_line(webvid_files, tmp_path, capsys):
    """6 usable rows, 2 of them videos that do not decode: 4 clips for 5 files, known only after decoding."""
    root, _ = webvid_files
    assert _build_cli(root, tmp_path, 5) == 1
    err = capsys.readouterr().err  # TFDS's progress bars, then the one line
    line = err.splitlines()[-1]
    assert line.startswith(f"error: --num_shards 5: only 4 clips could be decoded from {root / 'results.csv'} (skipped: ")
    assert line.endswith("every ArrayRecord file needs a clip, so ask for at most 4") and "Traceback" not in err, err
    assert not list((tmp_path / "tfds").rglob("dataset_info.json"))


def test_a_csv_with_a_byte_order_mark_is_read(tmp_path):
    """A spreadsheet's "CSV UTF-8" export starts with a byte-order mark; it was refused as missing the
    column '\\ufeffvideoid'."""
    (tmp_path / "videos").mkdir()
    write_mp4(tmp_path / "videos" / "7.mp4", ramp_video(8, 16, 16))
    (tmp_path / "bom.csv").write_bytes("\ufeffvideoid,name\n7,a café\n".encode("utf-8"))
    entries, skipped = read_csv(str(tmp_path / "bom.csv"), str(tmp_path / "videos"))
    assert [(e.videoid, e.caption) for e in entries] == [("7", "a café")] and not skipped


def test_each_skipped_csv_row_is_said_with_its_line(tmp_path, capsys):
    """Rows skipped while the CSV is read were counted only (the README says each skipped video is said)."""
    (tmp_path / "videos").mkdir()
    write_mp4(tmp_path / "videos" / "7.mp4", ramp_video(8, 16, 16))
    _write_csv(tmp_path / "r.csv", [{"videoid": "7", "name": "ok"}, {"videoid": "", "name": "no id"},
                                    {"videoid": "8", "name": ""}, {"videoid": "7", "name": "again"},
                                    {"videoid": "9", "name": "no file"}])
    entries, skipped = read_csv(str(tmp_path / "r.csv"), str(tmp_path / "videos"))
    assert [e.videoid for e in entries] == ["7"] and capsys.readouterr().err == ""  # reading says nothing: the build does
    assert [str(row) for row in skipped] == ["line 3: missing_videoid", "line 4: empty_caption (videoid 8)",
                                             "line 5: duplicate_videoid (videoid 7)", "line 6: missing_file (videoid 9)"]
    build.main(["webvid", "--csv", str(tmp_path / "r.csv"), "--video_dir", str(tmp_path / "videos"), "--data_dir",
                str(tmp_path / "tfds"), "--name", "rows", "--frames", str(FRAMES), "--stride", "1", "--size",
                str(SIZE), "--workers", "1", "--num_shards", "1"])
    lines = [line.split("webvid: ", 1)[1] for line in capsys.readouterr().err.splitlines() if "webvid: skipping" in line]
    assert lines == [f"skipping {tmp_path / 'r.csv'} {row}" for row in skipped]
    stats = json.loads((tmp_path / "tfds" / "webvid" / "rows" / "1.0.0" / "metadata.json").read_text())
    assert stats["build_stats"]["skipped"] == {"missing_videoid": 1, "empty_caption": 1, "duplicate_videoid": 1,
                                               "missing_file": 1}


def test_clips_from_short_videos_are_counted_and_summarised(tmp_path, capsys):
    """A 3-frame video became a 4-frame clip of 3 distinct frames, counted as an ordinary clip and not
    mentioned (and the CLI dropped the builder's closing line with the build's stdout): now skipped by
    default (min_frames = frames), and with --min_frames 1 counted as padded, named in build_stats and in
    the closing line (stderr); a video shorter than the window is counted as slowed."""
    (tmp_path / "videos").mkdir()
    lengths = {"s3": 3, "s5": 5, "s9": 9}  # FRAMES 4 at STRIDE 2: a 7-frame window
    for vid, n in lengths.items():
        write_mp4(tmp_path / "videos" / f"{vid}.mp4", ramp_video(n, 16, 16, step=15))
    _write_csv(tmp_path / "r.csv", [{"videoid": v, "name": f"{n} frames"} for v, n in lengths.items()])

    def build_cli(name, *flags):
        out = build.main(["webvid", "--csv", str(tmp_path / "r.csv"), "--video_dir", str(tmp_path / "videos"),
                          "--data_dir", str(tmp_path / "tfds"), "--name", name, "--frames", str(FRAMES), "--stride",
                          str(STRIDE), "--size", str(SIZE), "--workers", "1", *flags])
        stats = json.loads((tmp_path / "tfds" / "webvid" / name / "1.0.0" / "metadata.json").read_text())
        err = capsys.readouterr().err  # the build's own lines, amid TFDS's progress bars
        lines = ["webvid: " + line.split("webvid: ", 1)[1] for line in err.splitlines() if "webvid: " in line]
        return load_source(out), stats["build_stats"], lines

    s3 = tmp_path / "videos" / "s3.mp4"
    data, stats, lines = build_cli("default")
    assert len(data) == 2 and stats["skipped"] == {"too_short": 1}
    assert (stats["padded_clips"], stats["padded_videos"], stats["slowed_clips"]) == (0, {}, 1)
    assert lines == [f"webvid: skipping {s3}: too_short: 3 frames, need at least 4",
                     "webvid: 2 clips written; 1 clip slowed from videos shorter than the 7-frame window of 4 "
                     "frames at stride 2; skipped {'too_short': 1}"]

    data, stats, lines = build_cli("padded", "--min_frames", "1")
    padded = [data[i]["video"] for i in range(len(data)) if data[i]["videoid"] == b"s3"][0]
    assert len(np.unique(padded.reshape(FRAMES, -1), axis=0)) == 3  # 4 frames, 3 distinct
    assert len(data) == 3 and stats["skipped"] == {}
    assert (stats["padded_clips"], stats["padded_videos"], stats["slowed_clips"]) == (1, {"s3": 3}, 1)
    assert lines == [f"webvid: padding {s3}: 3 frames, fewer than the clip's 4 (some repeat)",
                     "webvid: 3 clips written; 1 clip padded from videos shorter than 4 frames (see --min_frames); "
                     "1 clip slowed from videos shorter than the 7-frame window of 4 frames at stride 2; "
                     "skipped none"]
