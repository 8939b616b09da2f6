"""The main job: generate with a chosen method on a task, and summarise.

    genppl                                   # plain sampling on the bundled model's arithmetic task
    genppl --task sentences --n 8            # keyword-free sentences
    genppl --prompt "S: the dog" --n 4       # any prompt
    genppl --model path/to/hf-checkpoint --prompt "Hello" --max-new-tokens 32

Methods register in ``METHODS``; each takes (lm, prompt ids, args, key) and returns Samples.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time

import jax
import numpy as np
from tqdm.auto import tqdm

import models
from models.interface import InputError


def run_sample(lm, prompt_ids, args, key) -> models.Samples:
    return models.sample(lm, prompt_ids, args.n, args.max_new_tokens, key,
                         temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)


METHODS = {"sample": run_sample}


def encode_prompt(lm, text: str) -> list[int]:
    """Token ids of a prompt: the document separator (BOS, else EOS) and then the text."""
    tok = lm.tokenizer
    start = tok.bos_id if tok.bos_id is not None else lm.eos_id
    return [start] + tok.encode(text)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="genppl", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="local Hugging Face checkpoint directory (default: bundled)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--method", default="sample", choices=sorted(METHODS))
    p.add_argument("--task", default="arithmetic", choices=["arithmetic", "sentences"],
                   help="evaluation task of the bundled model (ignored with --prompt)")
    p.add_argument("--prompt", default=None, help="generate from this text instead of a task")
    p.add_argument("--problems", type=int, default=16, help="number of task prompts")
    p.add_argument("--n", type=int, default=8, help="samples (particles) per prompt")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: 96 (arithmetic), 32 otherwise")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--show", type=int, default=3, help="samples to print")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = p.parse_args(argv)
    if args.max_new_tokens is None:
        args.max_new_tokens = 96 if args.prompt is None and args.task == "arithmetic" else 32
    return args


def jobs(args):
    """(prompt text, scorer) pairs; a scorer maps the completions of one prompt to a dict of
    per-prompt metrics (None for a free prompt)."""
    if args.prompt is not None:
        return [(args.prompt, None)]
    if args.task == "arithmetic":
        from tasks import arithmetic

        def scorer(problem):
            def score(texts):
                answers = [arithmetic.extract_answer(t) for t in texts]
                voted = collections.Counter(a for a in answers if a is not None).most_common(1)
                return {"accuracy": np.mean([a == problem.answer for a in answers]),
                        "majority_vote_accuracy": float(bool(voted) and voted[0][0] == problem.answer)}
            return score

        return [(arithmetic.prompt_text(pb), scorer(pb)) for pb in arithmetic.eval_problems(args.problems)]
    from tasks import sentences

    score = lambda texts: {"well_formed": np.mean([sentences.is_well_formed(t) for t in texts])}
    return [(sentences.prompt_text(), score)] * args.problems


def run(args) -> dict:
    lm = models.load(args.model, dtype=args.dtype)
    method = METHODS[args.method]
    key = jax.random.key(args.seed)
    work = jobs(args)
    tokens, elapsed = 0, 0.0
    metrics = collections.defaultdict(list)
    shown = []
    for text, score in tqdm(work, desc=args.method, unit="prompt", disable=len(work) == 1):
        key, sub = jax.random.split(key)
        started = time.perf_counter()
        out = method(lm, encode_prompt(lm, text), args, sub)
        elapsed += time.perf_counter() - started
        tokens += int(out.num_tokens.sum())
        if score is not None:
            for name, value in score(out.texts).items():
                metrics[name].append(value)
        if len(shown) < args.show:
            shown += [(text, t) for t in out.texts[: args.show - len(shown)]]
    summary = {
        "model": str(args.model or models.bundled_path()),
        "method": args.method,
        "task": "prompt" if args.prompt is not None else args.task,
        "prompts": len(work),
        "samples": len(work) * args.n,
        "tokens": tokens,
        "seconds": round(elapsed, 3),
        "tokens_per_second": round(tokens / max(elapsed, 1e-9), 1),
    }
    summary.update({name: round(float(np.mean(v)), 4) for name, v in metrics.items()})
    summary["examples"] = [{"prompt": p, "completion": c} for p, c in shown]
    return summary


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        summary = run(args)
    except (InputError, ValueError, FileNotFoundError) as err:
        print(f"genppl: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    for ex in summary.pop("examples"):
        print(f"--- {ex['prompt']!r}\n{ex['completion']}")
    print("--- summary")
    for k, v in summary.items():
        print(f"{k:>24}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
