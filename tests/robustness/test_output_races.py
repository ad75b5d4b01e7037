"""Two runs given the same output: the "already exists" check happens before the work, so a second run
used to replace, at its end, what the first wrote meanwhile (a stranger's two `evaluate --results
race.md` runs both printed "wrote race.md"). An output checked without --overwrite stays the other
run's: this run ends with one line naming it, and leaves no temporary file."""
import os

import pytest

from animatediff_jax import evaluate
from animatediff_jax.errors import OutputError
from animatediff_jax.outputs import atomic_folder, atomic_path, check_output


def _leftovers(folder):
    return [n for n in os.listdir(folder) if n.startswith(".")]


def test_a_file_written_meanwhile_is_not_replaced(tmp_path):
    out = tmp_path / "table.md"
    check_output(str(out), name="--results")
    out.write_text("the other run's")
    with pytest.raises(OutputError, match=rf"^{out}: appeared while this ran .* pass --overwrite to replace it$"):
        with atomic_path(str(out)) as tmp, open(tmp, "w") as f:
            f.write("ours")
    assert out.read_text() == "the other run's" and _leftovers(tmp_path) == []


def test_with_overwrite_or_unchecked_it_is_replaced(tmp_path):
    out = tmp_path / "table.md"
    check_output(str(out), name="--results")
    check_output(str(out), name="--results", overwrite=True)  # the later check decides
    for _ in range(2):  # and an output written once may be written again (a record updated in place)
        out.write_text("old")
        with atomic_path(str(out)) as tmp, open(tmp, "w") as f:
            f.write("ours")
        assert out.read_text() == "ours"


def test_a_new_file_is_written_once(tmp_path):
    out = tmp_path / "table.md"
    check_output(str(out), name="--results")
    with atomic_path(str(out)) as tmp, open(tmp, "w") as f:
        f.write("ours")
    assert out.read_text() == "ours" and _leftovers(tmp_path) == []


def test_a_folder_filled_meanwhile_is_not_replaced(tmp_path):
    out = tmp_path / "export"
    check_output(str(out), name="OUTPUT", folder=True)
    out.mkdir()
    (out / "theirs.json").write_text("{}")
    with pytest.raises(OutputError, match=rf"^{out}: appeared while this ran"):
        with atomic_folder(str(out)) as tmp:
            open(os.path.join(tmp, "ours.json"), "w").close()
    assert os.listdir(out) == ["theirs.json"] and _leftovers(tmp_path) == []


def test_evaluate_leaves_a_results_file_written_meanwhile(tmp_path, monkeypatch, capsys):
    results = tmp_path / "race.md"

    def other_run_writes_first(*args, **kwargs):
        results.write_text("the other run's table")
        return []
    monkeypatch.setattr(evaluate, "evaluate", other_run_writes_first)
    monkeypatch.setattr(evaluate, "report", lambda *a, **k: "our table")
    assert evaluate.main(["--results", str(results), "--rows", "base + module", "--samples", "2"]) == 1
    assert capsys.readouterr().err.startswith(f"error: {results}: appeared while this ran")
    assert results.read_text() == "the other run's table"
