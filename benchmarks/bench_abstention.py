"""`eval abstention` against a plain greedy generation of the same questions, in the same process
(paired rounds, medians): the answer confidence and P(sure) cost one batched scoring pass of the
certainty text, not a second generation. Goal: ≤ 1.3x. It also prints the tokens each reads per
question: the scoring pass reads the certainty question, which the world's 1,052-token vocabulary
spells in 52 tokens, so on this model its cost is set by that length.

1,000 questions: every QA fact of the default world (trained phrasings), on its model, greedy
answers of at most 15 tokens stopped at the first "." or newline, as `eval abstention` asks them.

    python benchmarks/bench_abstention.py                 # the quickstart's default model
    python benchmarks/bench_abstention.py --model DIR     # another model of the default world
"""

from __future__ import annotations

import argparse
import json

import torch
from _timing import paired

from llmkit.evals.abstention import ask, evaluate_abstention
from llmkit.generation import GenerationParams, HFBackend, encode_prompts
from llmkit.methods.rtuning import ANSWER_STOP, certainty_prompt
from llmkit.models import load_model
from llmkit.world.cache import default_cache_dir, ensure_model, ensure_world, preset
from llmkit.world.questions import world_questions

GOAL = 1.3
MAX_NEW_TOKENS = 15


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory [default: the quickstart's default world model]")
    parser.add_argument("--questions", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    options = parser.parse_args()
    cache = default_cache_dir()
    world_dir, _ = ensure_world(cache, preset("default")[0])
    model_path = options.model or str(ensure_model(cache, *preset("default"))[0])
    torch.manual_seed(0)
    model, tokenizer = load_model(model_path, device="cpu", dtype="float32")
    backend = HFBackend(model, tokenizer, batch_size=64)
    items = world_questions(world_dir)[: options.questions]
    params = GenerationParams(max_new_tokens=MAX_NEW_TOKENS, stop=ANSWER_STOP)

    base, cand, ratio = paired(
        lambda: backend.generate([item["prompt"] for item in items], params),
        lambda: evaluate_abstention(backend, items, max_new_tokens=MAX_NEW_TOKENS),
        options.repeats,
    )
    # What each reads per question: the prompt and the answer's tokens, against the certainty text.
    samples = ask(backend, items, MAX_NEW_TOKENS)
    generated = encode_prompts(tokenizer, [item["prompt"] + " " + s["answer"] for item, s in zip(items, samples)])
    certainty = encode_prompts(
        tokenizer, [certainty_prompt(item["prompt"], s["answer"]) for item, s in zip(items, samples)]
    )
    figures = {
        "questions": len(items),
        "tokens_per_question_generate": round(sum(map(len, generated)) / len(items), 1),
        "tokens_per_question_scoring": round(sum(map(len, certainty)) / len(items), 1),
        "generate_s": round(base, 3),
        "eval_abstention_s": round(cand, 3),
        "ratio": round(ratio, 3),
        "goal": GOAL,
        "met": ratio <= GOAL,
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
