"""The vLLM backend against a real vLLM: the same texts and scores as HF, clean pipelines.

Runs where vllm is importable: CI installs the CPU build from `../shared/vllm-cpu/` into a second
virtual environment and runs this module there (`.ci/run`); elsewhere it is skipped.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("vllm")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; vLLM's CPU default takes a large share of memory

import torch

from conftest import PROMPTS
from llmkit.data import read_records
from llmkit.errors import BadInputError
from llmkit.evals.abstention import evaluate_abstention, evaluate_search
from llmkit.generation import GenerationParams, VLLMBackend, load_backend
from llmkit.methods.configs import RTuningConfig
from llmkit.methods.mash import SearchEnvironment, SearchIndex, read_corpus, sentence_passages, with_prompts
from llmkit.methods.rtuning import build_rtuning_data
from llmkit.world.questions import abstention_sets, search_questions, world_questions
from tiny import build_model_dir

pytestmark = pytest.mark.vllm

LLMKIT = Path(sys.executable).parent / "llmkit"
EXIT_LAG_LIMIT_S = 4.0
"""Last result line to process exit. Before the engine was closed and run in-process: 7.2 s."""


@pytest.fixture(scope="module")
def probes(micro_world):
    return read_records(micro_world / "probes.jsonl")


def test_text_ending_inside_a_multibyte_character_is_decoded_as_hf_decodes_it(tmp_path_factory):
    # A random byte-level model emits stray bytes of multi-byte characters (head size 64: vLLM's
    # CPU attention takes no head size below 32).
    model_dir = build_model_dir(tmp_path_factory.mktemp("vllm") / "llama", "llama", d_model=256, d_mlp=512)
    params = GenerationParams(max_new_tokens=16)
    hf_texts = [g.texts for g in load_backend("hf", str(model_dir)).generate(PROMPTS, params)]
    assert any(t[0].endswith("\ufffd") for t in hf_texts), "no generation ends inside a character"
    with load_backend("vllm", str(model_dir)) as vllm:
        assert [g.texts for g in vllm.generate(PROMPTS, params)] == hf_texts


def test_a_device_vllm_cannot_use_is_bad_input(micro_model):
    with pytest.raises(BadInputError, match="CUDA is not available"):
        VLLMBackend(str(micro_model), device="cuda")


def run_llmkit(*args, **kwargs):
    """The installed `llmkit` command in a process of its own; stdout and stderr kept apart."""
    return subprocess.run([str(LLMKIT), *map(str, args)], capture_output=True, text=True, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def prompts_file(probes, tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p["prompt"], "id": i}) + "\n" for i, p in enumerate(probes[:20])))
    return path


def test_generate_streams_only_jsonl_on_stdout_and_exits_promptly(micro_model, prompts_file):
    proc = subprocess.Popen(
        [
            str(LLMKIT),
            "generate",
            "--backend",
            "vllm",
            "-m",
            str(micro_model),
            "-i",
            str(prompts_file),
            "--max-new-tokens",
            "8",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines, last_line_at = [], None
    for line in proc.stdout:
        lines.append(json.loads(line))  # every stdout line is a JSON record
        last_line_at = time.perf_counter()
    proc.wait(timeout=60)
    exit_lag = time.perf_counter() - last_line_at
    assert proc.returncode == 0, proc.stderr.read()
    assert [r["id"] for r in lines] == list(range(20)) and all(len(r["generations"]) == 1 for r in lines)
    assert exit_lag < EXIT_LAG_LIMIT_S, f"{exit_lag:.1f} s from the last output to exit"


def test_generate_json_prints_exactly_one_document(micro_model, prompts_file, tmp_path):
    out = tmp_path / "run"
    result = run_llmkit(
        "generate",
        "--backend",
        "vllm",
        "-m",
        micro_model,
        "-i",
        prompts_file,
        "--max-new-tokens",
        4,
        "--temperature",
        1.0,
        "--seed",
        0,
        "--json",
        "--output-path",
        out,
    )
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)  # the whole of stdout is one JSON document
    assert printed == json.loads((out / "results.json").read_text())
    assert printed["config"]["resolved_dtype"] == "float32" and printed["metrics"]["num_prompts"] == 20


def test_bad_dtype_is_one_line_and_exit_2(micro_model, prompts_file, tmp_path):
    out = tmp_path / "run"
    result = run_llmkit(
        "generate", "--backend", "vllm", "-m", micro_model, "-i", prompts_file, "--dtype", "float99", "-o", out
    )
    assert result.returncode == 2
    message = "error: unknown dtype 'float99'; use auto, float32, bfloat16 or float16"
    assert result.stderr.strip().splitlines() == [message]
    assert result.stdout == "" and not out.exists()


def test_a_model_vllm_cannot_load_is_one_error_line_and_exit_2(micro_model, prompts_file, tmp_path):
    model_dir = shutil.copytree(micro_model, tmp_path / "model")
    config = json.loads((model_dir / "config.json").read_text())
    config.update(model_type="nosuchmodel", architectures=["NoSuchModelForCausalLM"])
    (model_dir / "config.json").write_text(json.dumps(config))
    result = run_llmkit("generate", "--backend", "vllm", "-m", model_dir, "-i", prompts_file, "-o", tmp_path / "run")
    assert result.returncode == 2 and result.stdout == "" and not (tmp_path / "run").exists()
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: vLLM cannot load model") and "nosuchmodel" in last
    assert "Traceback" not in result.stderr


def test_a_script_without_a_main_guard_can_use_the_backend(micro_model, tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        "from llmkit.generation import GenerationParams, load_backend\n"
        f"backend = load_backend('vllm', {str(micro_model)!r})\n"
        "print(backend.generate(['Question:'], GenerationParams(max_new_tokens=2))[0].texts)\n"
        "backend.close()\n"
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("['") and len(result.stdout.splitlines()) == 1


def test_eval_ort_on_vllm_reports_what_hf_reports(micro_model, micro_world, tmp_path):
    """`llmkit eval ort --backend vllm` scores every probe as the HF backend does, and a run on
    one backend is a valid baseline for the other (the same probes)."""
    target = next(
        e["name"] for e in read_records(micro_world / "entities.jsonl") if e["demonstration"] and e["exposure"] == 30
    )
    common = ("eval", "ort", "-m", micro_model, "--probes", micro_world, "--targets", target)
    hf = run_llmkit(*common, "-o", tmp_path / "hf")
    assert hf.returncode == 0, hf.stderr
    vllm = run_llmkit(*common, "--backend", "vllm", "-o", tmp_path / "vllm", "--baseline", tmp_path / "hf")
    assert vllm.returncode == 0, vllm.stderr
    hf_samples, vllm_samples = (
        read_records(tmp_path / "hf" / "samples.jsonl"),
        read_records(tmp_path / "vllm" / "samples.jsonl"),
    )
    assert [s["prompt"] for s in vllm_samples] == [s["prompt"] for s in hf_samples] and len(hf_samples) > 100
    assert max(abs(a["prob"] - b["prob"]) for a, b in zip(hf_samples, vllm_samples)) < 1e-4
    assert sum(a["correct"] == b["correct"] for a, b in zip(hf_samples, vllm_samples)) >= 0.99 * len(hf_samples)
    drops = json.loads((tmp_path / "vllm" / "results.json").read_text())["metrics"]["drop"]["forget"]
    assert all(abs(d) < 1e-3 for d in drops.values())


def test_generate_on_vllm_applies_a_ksd_gate_and_refuses_neuron_adjust(micro_model, micro_world, tmp_path):
    """The gate checks prompts in an HF prefill pass, so vLLM generates only what it lets through:
    the refused prompt answers the refusal, the other matches the HF backend's answer."""
    train = [
        i for i in read_records(micro_world / "skills.jsonl") if i["skill"] == "reversal" and i["split"] == "train"
    ]
    forget, prompts = tmp_path / "forget.jsonl", tmp_path / "prompts.jsonl"
    forget.write_text("".join(json.dumps({"prompt": i["prompt"], "answer": i["answer"]}) + "\n" for i in train))
    prompts.write_text(
        json.dumps({"prompt": "Reverse: a b c d =>"}) + "\n" + json.dumps({"prompt": "Question: Where was"}) + "\n"
    )
    gate = tmp_path / "gate"
    fitted = run_llmkit("unlearn", "ksd", "-m", micro_model, "--forget", forget, "--refusal", "No.", "--out", gate)
    assert fitted.returncode == 0, fitted.stderr
    common = ("generate", "-m", micro_model, "-i", prompts, "--intervention", gate, "--max-new-tokens", 8)
    vllm, hf = run_llmkit(*common, "--backend", "vllm"), run_llmkit(*common)
    assert vllm.returncode == 0 and hf.returncode == 0, vllm.stderr
    generations = [json.loads(line)["generations"] for line in vllm.stdout.splitlines()]
    assert generations[0] == ["No."] and generations[1] != ["No."]
    assert generations == [json.loads(line)["generations"] for line in hf.stdout.splitlines()]

    retain = tmp_path / "retain.jsonl"
    retain.write_text(json.dumps({"text": "Question: Where was Bob born? Answer: Lyon"}) + "\n")
    adjust = tmp_path / "na"
    assert (
        run_llmkit(
            "unlearn", "neuron-adjust", "-m", micro_model, "--forget", forget, "--retain", retain, "--out", adjust
        ).returncode
        == 0
    )
    refused = run_llmkit("generate", "--backend", "vllm", "-m", micro_model, "-i", prompts, "--intervention", adjust)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1].endswith("use --backend hf with it")


def test_eval_hallucination_samples_on_vllm_and_embeds_on_hf(micro_model, micro_world, tmp_path):
    """K answers per prompt sampled by vLLM, embedded by the HF model beside it: the run reports
    what the HF run reports in kind (the samples differ: another sampler)."""
    out = tmp_path / "vllm"
    result = run_llmkit(
        "eval",
        "hallucination",
        "-m",
        micro_model,
        "--world",
        micro_world,
        "--samples",
        4,
        "--limit",
        6,
        "--backend",
        "vllm",
        "-o",
        out,
    )
    assert result.returncode == 0, result.stderr
    samples = read_records(out / "samples.jsonl")
    assert len(samples) == 12 and all(len(s["samples"]) == 4 for s in samples)
    metrics = json.loads((out / "results.json").read_text())["metrics"]
    assert metrics["groups"]["exposure 30"]["accuracy"] > metrics["groups"]["exposure 0"]["accuracy"]
    assert metrics["groups"]["exposure 30"]["eigenscore"] < metrics["groups"]["exposure 0"]["eigenscore"]


class TestOnTheMicroWorldModel:
    """One engine for these tests, closed before the next test opens another: engines in one
    process share vLLM's process-wide state. Last in the module: after its search-mode test, an
    engine started later in the same process fails in vLLM's triton kernel dispatcher
    ('_lib_fn_wrapper' object has no attribute 'get'); the cause is not yet found."""

    @pytest.fixture(scope="class")
    def micro_vllm(self, micro_model):
        with load_backend("vllm", str(micro_model)) as backend:
            yield backend

    @pytest.fixture(scope="class")
    def micro_hf(self, micro_model):
        return load_backend("hf", str(micro_model))

    def test_auto_dtype_is_the_same_for_both_backends(self, micro_vllm, micro_hf):
        assert micro_vllm.dtype == micro_hf.dtype == torch.float32  # on CPU; vLLM alone would pick bfloat16

    def test_greedy_answers_match_hf_on_every_probe(self, micro_vllm, micro_hf, probes):
        prompts = [p["prompt"] for p in probes]
        params = GenerationParams(max_new_tokens=16, stop=("\n",))
        vllm_texts = [g.texts for g in micro_vllm.generate(prompts, params)]
        hf_texts = [g.texts for g in micro_hf.generate(prompts, params)]
        differ = [(p, v, h) for p, v, h in zip(prompts, vllm_texts, hf_texts) if v != h]
        assert not differ, f"{len(differ)} of {len(prompts)} probes differ, e.g. {differ[:3]}"
        assert sum(t[0].strip() == p["answer"] for t, p in zip(hf_texts, probes)) > len(probes) / 4  # it knows things

    def test_scores_match_hf(self, micro_vllm, micro_hf, probes):
        prompts = [p["prompt"] for p in probes]
        answers = [" " + p["answer"] for p in probes]
        hf_scores = micro_hf.score(prompts, answers)
        for v, h in zip(micro_vllm.score(prompts, answers), hf_scores):
            assert v.token_ids == h.token_ids
            assert max(abs(a - b) for a, b in zip(v.logprobs, h.logprobs)) <= 1e-4
            assert v.greedy == h.greedy
        # The next tokens' log-probabilities too (each one a request of its own on vLLM: a sample).
        hf_next = micro_hf.score(prompts[:60], answers[:60], next_tokens=(3, 11))
        for v, h in zip(micro_vllm.score(prompts[:60], answers[:60], next_tokens=(3, 11)), hf_next):
            assert max(abs(a - b) for a, b in zip(v.next_logprobs, h.next_logprobs)) <= 1e-4
        assert any(s.greedy for s in hf_scores)

    def test_abstention_eval_reports_what_hf_reports(self, micro_vllm, micro_hf, micro_world):
        """`llmkit eval abstention --backend vllm`'s work: every question's answer, confidence and
        P(sure) (one scoring pass with next tokens) as HF gives them, so the metrics agree."""
        questions = world_questions(micro_world)
        hf_metrics, hf_samples = evaluate_abstention(micro_hf, questions)
        vllm_metrics, vllm_samples = evaluate_abstention(micro_vllm, questions)
        assert [s["answer"] for s in vllm_samples] == [s["answer"] for s in hf_samples] and len(hf_samples) == 120
        for key in ("confidence", "p_sure"):
            assert max(abs(a[key] - b[key]) for a, b in zip(hf_samples, vllm_samples)) < 1e-3, key
        for name in ("accuracy", "ap", "answer_rate", "p_sure_mean"):
            assert abs(hf_metrics[name] - vllm_metrics[name]) < 1e-3, name

    def test_search_mode_reports_what_hf_reports(self, micro_vllm, micro_hf, micro_world):
        """`llmkit eval abstention --mode search --backend vllm`'s work: each episode's segments
        (greedy, to a stop tag), searches and documents, and the next segment written over them,
        as HF runs them, so the metrics agree. The micro model never learnt the tags, so its first
        action is forced to be a search (--first-action search); what it writes then is its own."""
        items = with_prompts(search_questions(micro_world), "short")[:60]
        env = SearchEnvironment(
            SearchIndex(sentence_passages(read_corpus(micro_world / "corpus.jsonl"))), top_k=1, max_searches=2
        )
        hf_metrics, hf_samples = evaluate_search(micro_hf, items, env, 12, first_action="search")
        vllm_metrics, vllm_samples = evaluate_search(micro_vllm, items, env, 12, first_action="search")
        assert [s["trajectory"] for s in vllm_samples] == [s["trajectory"] for s in hf_samples]
        assert vllm_metrics == hf_metrics
        assert all(s["searches"] >= 1 for s in hf_samples)  # what it searched for may match no document
        assert sum("<document>" in s["trajectory"] for s in hf_samples) > len(hf_samples) / 2

    def test_rtuning_data_splits_as_on_hf(self, micro_vllm, micro_hf, micro_world):
        """`llmkit data rtuning --backend vllm`'s work: the greedy answers that split the questions,
        and so the split and the training texts, are HF's."""
        questions, _ = abstention_sets(micro_world, 0.5, seed=0)
        vllm_records, vllm_split = build_rtuning_data(micro_vllm, questions, RTuningConfig())
        hf_records, hf_split = build_rtuning_data(micro_hf, questions, RTuningConfig())
        assert [(s["model_answer"], s["certain"]) for s in vllm_split] == [
            (s["model_answer"], s["certain"]) for s in hf_split
        ]
        assert vllm_records == hf_records and 0 < sum(s["certain"] for s in hf_split) < len(hf_split)

    def test_seeded_sampling_is_reproducible_beyond_one_scheduler_step(self, micro_vllm, probes):
        budget = micro_vllm.llm.llm_engine.vllm_config.scheduler_config.max_num_batched_tokens
        prompts = [p["prompt"] for p in probes]
        assert sum(len(micro_vllm.tokenizer(p)["input_ids"]) for p in prompts) > budget  # vLLM crashed past this
        params = GenerationParams(max_new_tokens=8, temperature=1.0, num_samples=2, seed=11)
        reported = []
        first = [g.texts for g in micro_vllm.generate(prompts, params, lambda *progress: reported.append(progress))]
        again = [g.texts for g in micro_vllm.generate(prompts, params)]
        assert first == again
        assert all(len(t) == 2 for t in first) and sum(t[0] != t[1] for t in first) > len(prompts) / 2
        other_seed = GenerationParams(max_new_tokens=8, temperature=1.0, num_samples=2, seed=12)
        assert [g.texts for g in micro_vllm.generate(prompts, other_seed)] != first
        assert reported[-1] == (len(prompts), len(prompts))  # progress counts prompts, as HF's does
        assert [done for done, _ in reported] == sorted(done for done, _ in reported)

    def test_inputs_beyond_the_context_are_refused_as_hf_refuses_them(self, micro_vllm, micro_hf):
        limit = micro_vllm.llm.model_config.max_model_len
        for backend in (micro_vllm, micro_hf):
            with pytest.raises(
                BadInputError, match=f"--max-new-tokens asks for {limit} more, beyond the model's context of {limit}"
            ):
                backend.generate(["Alice"], GenerationParams(max_new_tokens=limit))
            with pytest.raises(BadInputError, match=f"beyond the model's context of {limit} tokens"):
                backend.score(["word " * limit], [" end"])

    def test_a_second_engine_in_the_process_is_refused_while_one_is_open(self, micro_vllm, micro_model):
        with pytest.raises(RuntimeError, match="already open in this process"):
            VLLMBackend(str(micro_model))


# --- engine options and adapters, each run in a process of its own -------------------------------


def test_engine_options_reach_the_engine_and_results_json(micro_model, prompts_file, tmp_path):
    out = tmp_path / "run"
    result = run_llmkit(
        "generate",
        "--backend",
        "vllm",
        "-m",
        micro_model,
        "-i",
        prompts_file,
        "--max-new-tokens",
        4,
        "--max-model-len",
        96,
        "--no-enable-prefix-caching",
        "--vllm-arg",
        "max_num_seqs=8",
        "--json",
        "-o",
        out,
    )
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "results.json").read_text())["config"]
    assert config["vllm_engine_args"]["max_model_len"] == 96 and config["vllm_engine_args"]["max_num_seqs"] == 8
    engine = config["vllm_engine"]  # as vLLM's engine resolved them
    assert engine["max_model_len"] == 96 and engine["enable_prefix_caching"] is False and engine["max_num_seqs"] == 8
    # The engine's context is the one checked: a prompt with more new tokens than it holds is refused.
    refused = run_llmkit(
        "generate",
        "--backend",
        "vllm",
        "-m",
        micro_model,
        "-i",
        prompts_file,
        "--max-model-len",
        16,
        "--max-new-tokens",
        12,
    )
    assert refused.returncode == 2 and "context of 16 tokens" in refused.stderr


@pytest.mark.parametrize(
    "argument, message",
    [
        ("max_num_seq=8", "vLLM's engine has no argument of that name; did you mean max_num_seqs?"),
        ("seed=3", "llmkit sets it from its own options"),
        ("8", "--vllm-arg takes KEY=VALUE"),
    ],
)
def test_a_bad_vllm_arg_is_one_line_and_exit_2(argument, message, micro_model, prompts_file, tmp_path):
    out = tmp_path / "run"
    result = run_llmkit(
        "generate", "--backend", "vllm", "-m", micro_model, "-i", prompts_file, "--vllm-arg", argument, "-o", out
    )
    assert result.returncode == 2 and result.stdout == "" and not out.exists()
    # vLLM's import may log a line of its own first (on CPU, that Triton has no CPU backend).
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in result.stderr


def test_an_adapter_on_vllm_generates_what_hf_generates_with_it_merged(micro_model, probes, prompts_file, tmp_path):
    """vLLM's CPU platform has LoRA kernels (Punica's CPU wrapper): the adapter runs through a
    LoRARequest on the base model, and greedy texts match HF's merged adapter."""
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"text": f"{p['prompt']} Zanzibar"}) + "\n" for p in probes[:20]))
    adapter = tmp_path / "adapter"
    trained = run_llmkit(
        "train",
        "sft",
        "--model",
        micro_model,
        "--data",
        train,
        "--out",
        adapter,
        "--lora",
        "--lora-rank",
        4,
        "--epochs",
        5,
        "--lr",
        1e-2,
        "--batch-size",
        4,
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    texts = {}
    for backend, model in (("hf", adapter), ("vllm", adapter), ("base", micro_model)):
        out = tmp_path / backend
        result = run_llmkit(
            "generate",
            "--backend",
            backend.replace("base", "hf"),
            "-m",
            model,
            "-i",
            prompts_file,
            "--max-new-tokens",
            6,
            "-o",
            out,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        texts[backend] = [r["generations"] for r in read_records(out / "samples.jsonl")]
    assert texts["vllm"] == texts["hf"]
    # The adapter changed what the model says.
    assert sum(a != b for a, b in zip(texts["hf"], texts["base"])) >= 5
    assert json.loads((tmp_path / "vllm" / "results.json").read_text())["config"]["vllm_engine"]["lora"] is True
