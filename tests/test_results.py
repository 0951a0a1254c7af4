import json
import os

import pytest

from llmkit.errors import BadInputError
from llmkit.results import check_output_path, make_results, staged_directory, write_run


def _results():
    return make_results("generate", {"model": "m"}, {"accuracy": 0.5}, wall_time_s=1.23456, num_samples=2)


def test_run_directory_round_trips(tmp_path):
    out = write_run(tmp_path / "run", _results(), [{"i": 0}, {"i": 1, "text": "é"}])
    results = json.loads((out / "results.json").read_text())
    assert results["metrics"] == {"accuracy": 0.5} and results["config"] == {"model": "m"}
    assert results["wall_time_s"] == 1.235 and results["num_samples"] == 2
    assert set(results["versions"]) == {"llmkit", "torch", "transformers", "python"}
    assert "git_commit" in results
    lines = (out / "samples.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"i": 0}, {"i": 1, "text": "é"}]


def test_existing_output_needs_overwrite(tmp_path):
    out = write_run(tmp_path / "run", _results())
    (out / "marker").write_text("old")
    with pytest.raises(BadInputError, match="already exists; pass --overwrite"):
        write_run(out, _results())
    assert (out / "marker").exists()
    write_run(out, _results(), overwrite=True)
    assert not (out / "marker").exists() and (out / "results.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_failure_while_writing_leaves_nothing(tmp_path):
    def samples():
        yield {"i": 0}
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_run(tmp_path / "run", _results(), samples())
    assert list(tmp_path.iterdir()) == []


def test_output_under_a_file_is_bad_input(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(BadInputError, match="cannot write to .*notes.txt .*choose another output path"):
        write_run(tmp_path / "notes.txt" / "run", _results())


def test_output_that_is_the_current_directory_or_holds_it_is_refused(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for path in (".", "..", str(work)):
        with pytest.raises(BadInputError, match="is the current directory or holds it"):
            write_run(path, _results(), overwrite=True)
    assert work.is_dir() and list(work.iterdir()) == []


def test_output_that_is_or_holds_an_input_is_refused(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    for out in (model, tmp_path):
        with pytest.raises(BadInputError, match="is or holds the input"):
            check_output_path(out, overwrite=True, inputs=[str(model), None, "-"])
    assert (model / "config.json").exists()


def test_overwrite_replaces_only_an_llmkit_output(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(BadInputError, match="holds files llmkit did not write"):
        write_run(mine, _results(), overwrite=True)
    assert (mine / "notes.txt").read_text() == "keep me"
    empty = tmp_path / "empty"
    empty.mkdir()
    write_run(empty, _results(), overwrite=True)
    assert (empty / "results.json").exists()


def test_names_too_long_are_refused_and_the_longest_legal_one_is_written(tmp_path):
    with pytest.raises(BadInputError, match=r"is too long \(300 bytes; file names are at most 255\)"):
        write_run(tmp_path / ("x" * 300), _results())
    longest = tmp_path / ("y" * 255)
    write_run(longest, _results())
    assert (longest / "results.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [longest.name]


def test_unwritable_parent_is_refused_before_the_work(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(BadInputError, match="permission denied"):
            check_output_path(locked / "run", overwrite=False)
    finally:
        locked.chmod(0o700)


def test_an_output_that_appears_meanwhile_is_not_replaced(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(BadInputError, match="was written by another run while this one worked"):
        with staged_directory(out) as staging:
            (staging / "results.json").write_text("mine")
            out.mkdir()
            (out / "results.json").write_text("theirs")
    assert (out / "results.json").read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
