import json

import pytest

from llmkit.errors import BadInputError
from llmkit.results import make_results, write_run


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
