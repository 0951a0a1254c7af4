"""The evaluations' shared plumbing (llmkit/evals/common.py): metric names, thresholds, probe
digests, and baselines of the same command on the same probes."""

import pytest

from llmkit.errors import BadInputError
from llmkit.evals.common import (
    check_metric_names,
    flatten_metrics,
    load_baseline,
    missed_thresholds,
    parse_thresholds,
    probe_digest,
)
from llmkit.results import make_results, write_run

METRICS = {"forget": {"qa": {"prob": 0.42, "exact_match": 1.0}, "mc": {"prob": None}}, "form_gap": 0.3, "n": 5}
PROBES = [
    {"target": "A", "form": "qa", "prompt": "Q?", "answer": "a"},
    {"target": "A", "form": "mc", "prompt": "P", "answer": "B"},
]


def test_metrics_are_named_by_their_dotted_paths():
    assert flatten_metrics(METRICS) == {"forget.qa.prob": 0.42, "forget.qa.exact_match": 1.0, "form_gap": 0.3, "n": 5.0}


def test_thresholds_name_the_metrics_they_miss():
    thresholds = parse_thresholds(["forget.qa.prob=0.01", "form_gap = 0.5"], ["forget.qa.exact_match=0.5"])
    missed = missed_thresholds(thresholds, METRICS)
    assert missed == ["forget.qa.prob = 0.42, wanted at most 0.01 (--fail-over)"]
    assert missed_thresholds(parse_thresholds(fail_under=["n=6"]), METRICS) == [
        "n = 5, wanted at least 6 (--fail-under)"
    ]


def test_a_threshold_on_a_metric_the_run_lacks_lists_the_real_names():
    names = "forget.qa.exact_match, forget.qa.prob, form_gap, n"
    with pytest.raises(BadInputError, match=rf"no metric named 'forget\.qa\.probability'; this run has: {names}$"):
        check_metric_names(parse_thresholds(["forget.qa.probability=0.1"]), METRICS)
    check_metric_names(parse_thresholds(["forget.qa.prob=0.1"]), METRICS)


@pytest.mark.parametrize("text", ["forget.qa.prob", "=0.1", "forget.qa.prob=low", "x=nan"])
def test_malformed_thresholds(text):
    with pytest.raises(BadInputError, match="--fail-over takes METRIC=VALUE"):
        parse_thresholds([text])


def test_probe_digest_changes_with_the_probes_and_their_order():
    assert probe_digest(PROBES) == probe_digest([dict(reversed(list(p.items()))) for p in PROBES])
    assert probe_digest(PROBES) != probe_digest(PROBES[::-1])
    assert probe_digest(PROBES) != probe_digest([PROBES[0], {**PROBES[1], "answer": "C"}])


def test_baseline_must_be_the_same_command_on_the_same_probes(tmp_path):
    digest = probe_digest(PROBES)
    run = write_run(tmp_path / "run", make_results("eval ort", {}, METRICS, wall_time_s=1.0, probe_digest=digest))
    assert load_baseline(run, "eval ort", digest)["metrics"] == METRICS
    with pytest.raises(BadInputError, match="is a run of 'eval ort', not 'eval restor'"):
        load_baseline(run, "eval restor", digest)
    with pytest.raises(BadInputError, match="ran on other probes"):
        load_baseline(run, "eval ort", probe_digest(PROBES[:1]))
    with pytest.raises(BadInputError, match="no results.json there"):
        load_baseline(tmp_path, "eval ort", digest)
