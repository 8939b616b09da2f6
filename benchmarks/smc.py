"""SMC overhead: tokens/s of our constrained SMC sweep against plain batched sampling, and
against LLaMPPL's SMC on the same checkpoint and the same constrained task.

    python benchmarks/smc.py                          # bundled model, N in 16 64, 64 tokens
    python benchmarks/smc.py --model DIR --n 16 --tokens 32 --repeats 5
    python benchmarks/smc.py --skip-llamppl
    python benchmarks/smc.py --dtype bfloat16         # both sides' weights in bfloat16
    python benchmarks/smc.py --part accuracy --n 16   # (c) arithmetic accuracy at equal budget

Task: continue ``<BOS>S:`` by exactly ``--tokens`` new tokens (EOS forbidden until then, so
every method does the same number of token steps per particle), N particles / samples.

* sampling: ``models.sample(..., min_new_tokens=T)``, unconstrained, temperature 1;
* SMC: ``inference.smc.run`` (systematic resampling at ESS < N/2, locally optimal proposal) on
  ``ppl.Program(potential=MinLength(T) * constraint)`` with the constraint ``none``,
  ``no e`` (``ppl.BannedStrings(["e", "E"])``, the letter-avoiding task) or ``regex``
  (``ppl.Regex`` of lower-case text, digits and punctuation);
* LLaMPPL (``llamppl.smc_standard``, HF transformers backend ``AsyncTransformer``, batch size N,
  multinomial resampling at ESS < N/2, its defaults) on the ``no e`` task, written the way
  its documentation writes constrained generation: per token, ``observe(mask_dist(allowed),
  True)`` (weight by the allowed mass, then sample within the mask: the same locally
  optimal proposal) and ``sample(next_token())``; ``allowed`` is every token without "e"/"E",
  EOS excluded.

tokens/s = N * T / wall time of one call, median of ``--repeats`` calls after one warm-up call
(which compiles our programs; LLaMPPL's caches are cleared before every call). Sampling and
the three SMC sweeps are timed in interleaved rounds (sampling, none, no e, regex, again and
again); the SMC overhead is the median over rounds of SMC / sampling in the same round, so
that a slow moment of a shared machine falls on both sides of a ratio. Everything
runs in one process, on the same machine, in the same run; ratios are what to compare.

LLaMPPL runs here: ``pip install llamppl`` (0.2.3, with genlm-backend 0.3.1) installs from
the registry without touching torch 2.13.0, and loads the local checkpoint directory through
transformers without any network access. Its HF backend batches the concurrent next-token
queries of the particles (``batch_size`` = N) after a 20 ms quiet period, and keeps a token
trie of KV caches; it runs on torch, so the comparison is between frameworks on the same
weights, not the same kernels. If llamppl is not importable the column shows "-".

``--part accuracy`` compares answers on held-out arithmetic problems at an equal budget of N
generations of at most ``--max-new-tokens`` tokens each, all from the same engine: plain
sampling (mean accuracy of one sample), best-of-N with the verifier (a uniformly chosen sample
among those whose every equation holds, else among all: its expected accuracy), majority vote
over the N samples, and SMC (N particles) whose target is p(x | question) times "every
equation written so far holds", checked at every step boundary (``ppl.StepVerifier``), with
the answer by weighted vote. Tokens generated per problem are reported for each.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path


import jax
import numpy as np

from genppl import models
from genppl import ppl
from genppl.inference import smc
from genppl.tasks import arithmetic

sys.path.insert(0, str(Path(__file__).resolve().parent))
import testbed  # noqa: E402

PROMPT = "S:"
BANNED = ["e", "E"]
REGEX = r"[a-z0-9 ,.:+=*-]*"


def median_time(run, repeats):
    run(0)  # compile + warm up
    times = []
    for r in range(repeats):
        start = time.perf_counter()
        run(r + 1)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sampling_runner(lm, prompt, n, tokens):
    def run(seed):
        out = models.sample(lm, prompt, n, tokens, jax.random.key(seed), min_new_tokens=tokens, progress=False)
        assert int(out.num_tokens.sum()) == n * tokens

    return run


def smc_runner(lm, prompt, n, tokens, constraint):
    potential = ppl.MinLength(tokens, lm.eos_id)
    if constraint is not None:
        potential = potential * constraint
    program = ppl.Program(lm, prompt, tokens, potential=potential)
    stats = {}

    def run(seed):
        result = smc.run(program, n, jax.random.key(seed), progress=False)
        assert len(result.ess) == tokens and all(len(ids) == tokens for ids in result.token_ids)
        assert np.isfinite(result.log_z), result.message
        stats.setdefault("resamplings", result.num_resampling)  # the first call's (seed 0)

    return run, stats


def load_llamppl(path, n, dtype="float32"):
    try:
        import llamppl  # noqa: F401
        import torch
    except ImportError as err:
        return None, f"llamppl not importable ({err})"
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    lm = llamppl.CachedCausalLM.from_pretrained(str(path), backend="hf", batch_size=n,
                                                hf_opts={"torch_dtype": getattr(torch, dtype)})
    return lm, None


def time_llamppl(lm, n, tokens, repeats):
    import asyncio

    import llamppl

    eos = lm.tokenizer.eos_token_id
    allowed = {i for i, v in enumerate(lm.str_vocab) if not any(b in v for b in BANNED)} - {eos}

    class AvoidLetter(llamppl.Model):
        def __init__(self, lm, prompt):
            super().__init__()
            self.context = llamppl.LMContext(lm, prompt)

        async def step(self):
            await self.observe(self.context.mask_dist(allowed), True)
            await self.sample(self.context.next_token())
            if self.context.token_count >= tokens:
                self.finish()

    prompt = lm.tokenizer.eos_token + PROMPT  # BOS (= EOS) then the prompt, as ours
    out = {}

    def run(seed):
        lm.clear_cache()
        np.random.seed(seed)
        particles = asyncio.run(llamppl.smc_standard(AvoidLetter(lm, prompt), n))
        assert all(p.context.token_count == tokens for p in particles)
        out["texts"] = [str(p.context) for p in particles]
        assert not any(b in t for t in out["texts"] for b in BANNED)

    return median_time(run, repeats), out


def accuracy(lm, problems, n, max_new_tokens, seed):
    """Per-method accuracy and tokens per problem on ``problems`` (see the module docstring)."""
    import collections

    # the step verifier; programs differing only in the prompt share one compiled sweep
    verifier = ppl.StepVerifier(arithmetic.equations_hold, lm.tokenizer)
    key = jax.random.key(seed)
    rows = collections.defaultdict(list)
    for problem in problems:
        prompt = [lm.eos_id] + lm.tokenizer.encode(arithmetic.prompt_text(problem))
        key, k1, k2 = jax.random.split(key, 3)
        out = models.sample(lm, prompt, n, max_new_tokens, k1)
        answers = [arithmetic.extract_answer(t) for t in out.texts]
        correct = np.array([a == problem.answer for a in answers], float)
        verified = np.array([arithmetic.check_steps(t) for t in out.texts])
        rows["plain sampling (1 sample)"].append((correct.mean(), out.num_tokens.sum()))
        pool = correct[verified] if verified.any() else correct
        rows["best-of-N with the verifier"].append((pool.mean(), out.num_tokens.sum()))
        votes = collections.Counter(a for a in answers if a is not None).most_common(1)
        rows["majority vote"].append((float(bool(votes) and votes[0][0] == problem.answer),
                                      out.num_tokens.sum()))
        program = ppl.Program(lm, prompt, max_new_tokens, potential=verifier, step_delimiter=".")
        result = smc.run(program, n, k2)
        rows["SMC with the step verifier (weighted vote)"].append(
            (float(result.best_answer(arithmetic.extract_answer) == problem.answer),
             sum(map(len, result.token_ids))))
    return {name: (float(np.mean([a for a, _ in r])), float(np.mean([t for _, t in r])))
            for name, r in rows.items()}


def main_accuracy(args, lm):
    problems = arithmetic.eval_problems(args.problems if not args.ops else 1000)
    if args.ops:  # only the held-out problems with this many operations (the hard ones: 4)
        problems = [pb for pb in problems if pb.solution.count("=") == args.ops][: args.problems]
    print(f"{len(problems)} held-out arithmetic problems ({args.ops or 'any number of'} operations), N = {args.n[0]} generations of at most "
          f"{args.max_new_tokens} tokens per problem, seed {args.seed}\n")
    print("| method | accuracy | tokens generated per problem |")
    print("|---|---:|---:|")
    for name, (acc, tokens) in accuracy(lm, problems, args.n[0], args.max_new_tokens, args.seed).items():
        print(f"| {name} | {acc:.3f} | {tokens:,.0f} |", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint directory (default: bundled)")
    p.add_argument("--n", type=int, nargs="+", default=[16, 64, 256])
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-llamppl", action="store_true")
    p.add_argument("--part", choices=["speed", "accuracy"], default="speed")
    p.add_argument("--problems", type=int, default=64, help="accuracy: held-out problems")
    p.add_argument("--max-new-tokens", type=int, default=96, help="accuracy: cap per generation")
    p.add_argument("--ops", type=int, default=4, help="accuracy: problems with this many operations (0: any)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="weights of both sides")
    args = p.parse_args(argv)

    path = args.model or str(models.bundled_path())
    lm = models.load(path, dtype=args.dtype)
    if args.part == "accuracy":
        print(f"model: {path} | {lm!r}")
        return main_accuracy(args, lm)
    prompt = [lm.eos_id] + lm.tokenizer.encode(PROMPT)
    constraints = {"none": None, "no e": ppl.BannedStrings(BANNED, lm), "regex": ppl.Regex(REGEX, lm)}

    print(f"model: {path} | {lm!r}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"jax {jax.__version__} on {jax.default_backend()}")
    print(f"prompt {len(prompt)} tokens, exactly {args.tokens} new tokens per particle, "
          f"median of {args.repeats} after a warm-up\n")
    print("| N | constraint | sampling tokens/s | SMC tokens/s | SMC overhead (sampling / SMC) "
          "| resamplings (first call) | LLaMPPL tokens/s | ours / LLaMPPL |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for n in args.n:
        llm, why = (None, "skipped") if args.skip_llamppl else load_llamppl(path, n, args.dtype)
        sweeps = {name: smc_runner(lm, prompt, n, args.tokens, c) for name, c in constraints.items()}
        runners = {"sampling": sampling_runner(lm, prompt, n, args.tokens)}
        runners.update({name: run for name, (run, _) in sweeps.items()})
        times = testbed.interleaved(runners, args.repeats)
        sampling = n * args.tokens / statistics.median(times["sampling"])
        for name in constraints:
            ours = n * args.tokens / statistics.median(times[name])
            overhead = testbed.round_ratio(times, name, "sampling")
            theirs = ratio = "-"
            if name == "no e" and llm is not None:
                rate = n * args.tokens / time_llamppl(llm, n, args.tokens, args.repeats)[0]
                theirs, ratio = f"{rate:,.0f}", f"{ours / rate:.1f}x"
            print(f"| {n} | {name} | {sampling:,.0f} | {ours:,.0f} | {overhead:.2f}x "
                  f"| {sweeps[name][1]['resamplings']} | {theirs} | {ratio} |", flush=True)
        if why and not args.skip_llamppl:
            print(f"(LLaMPPL: {why})")


if __name__ == "__main__":
    main()
