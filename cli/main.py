"""The main job: generate with a chosen method on a task, and summarise.

    genppl                                   # plain sampling on the bundled model's arithmetic task
    genppl --task sentences --n 8            # keyword-free sentences
    genppl --prompt "S: the dog" --n 4       # any prompt
    genppl --model path/to/hf-checkpoint --prompt "Hello" --max-new-tokens 32
    genppl --method smc --n 16               # SMC: every worked equation must hold, weighted vote
    genppl --method smc-steer --n 16         # SMC-steer (without-replacement selection)
    genppl --method pf --n 16                # step-level particle filter, step checks as reward
    genppl --method smc --task sentences --ban e --ban E     # sentences without the letter e
    genppl --method smc --prompt "S:" --regex " the [a-z]+ [a-z]+s\\."
    genppl --method power-mh --n 4           # MH power sampling of p^alpha (alpha 4 by default)
    genppl --method power-smc --n 16         # Power-SMC; --rejuvenate 1 adds MH moves
    genppl --method power-rollout --n 4 --horizon 16   # rollout estimates of the future
    genppl --method smc-guided --task sentences --keywords dog ball park --n 16   # HMM x DFA guide

Methods register in ``METHODS``; each takes (lm, prompt ids, args, key) and returns
``models.Samples`` (plain sampling) or an ``inference.SMCResult`` (weighted particles).

The SMC methods target p(x)^alpha * phi(x). On the arithmetic task phi is a step verifier
built from ``tasks.arithmetic``'s step checks (a particle dies at the first worked equation
that does not hold), and the answer of a problem is the weighted vote of its particles.
``--ban`` and ``--regex`` multiply token-level constraints into phi on any task.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import sys
import time

import jax
import numpy as np
from tqdm.auto import tqdm

from genppl import models
from genppl.models.interface import InputError

SMC_METHODS = ("smc", "smc-steer", "pf")
#: reward of a partial solution for ``--method pf``: this to the power of its wrong equations
WRONG_STEP_REWARD = 0.1


def run_sample(lm, prompt_ids, args, key) -> models.Samples:
    return models.sample(lm, prompt_ids, args.n, args.max_new_tokens, key,
                         temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)


def _program(lm, prompt_ids, args, potential, step_delimiter):
    from genppl import ppl

    return ppl.Program(lm, prompt_ids, args.max_new_tokens, potential=potential, alpha=args.alpha,
                       proposal=args.proposal, step_delimiter=step_delimiter)


def run_smc(lm, prompt_ids, args, key):
    from genppl import inference

    program = _program(lm, prompt_ids, args, args.potential, args.step_delimiter)
    if getattr(args, "learned", None):
        program = learned_program(lm, program, args)
    return inference.smc(program, args.n, key, resampler=args.resampler,
                         ess_threshold=args.ess_threshold)


def learned_program(lm, program, args):
    """``program`` with the LoRA proposal of a training checkpoint (``--learned PATH``)."""
    from genppl.inference import variational as vi
    from genppl.inference.variational_train import load_guide_params

    guide = vi.Guide(proposal=models.LoRA(lm, rank=args.learned_rank))
    return guide.program(load_guide_params(args.learned, guide), program)


def run_smc_steer(lm, prompt_ids, args, key):
    from genppl import inference

    # without-replacement selection expands every next token: a token-level program, so any
    # step verifier is checked once, on the finished text
    program = _program(lm, prompt_ids, args, args.potential, None)
    return inference.smc(program, args.n, key, selection="without_replacement")


def run_pf(lm, prompt_ids, args, key):
    """Step-level particle filter (Puri et al.): what ``inference.reward_particle_filter``
    runs, with the reward potential built once per run (``args.potential``) so that every
    problem reuses one compiled sweep."""
    from genppl import inference

    program = _program(lm, prompt_ids, args, args.potential, args.step_delimiter)
    result = inference.smc(program, args.n, key, resampler=args.resampler,
                           ess_threshold=args.ess_threshold)
    result.method = (f"step-level particle filter with a reward model (target={args.pf_target!r}, "
                     f"beta={args.beta:g})")
    return result


METHODS = {"sample": run_sample, "smc": run_smc, "smc-steer": run_smc_steer, "pf": run_pf}

# ---- power sampling of p^alpha (inference.mcmc, inference.power) --------------------------
POWER_METHODS = ("power-mh", "power-smc", "power-rollout")


def run_power_mh(lm, prompt_ids, args, key):
    from genppl import inference

    return inference.power_mcmc(lm, prompt_ids, args.n, args.max_new_tokens, key, alpha=args.alpha,
                                block_size=args.block_size, num_mcmc=args.num_mcmc, move=args.mh_move)


def run_power_smc(lm, prompt_ids, args, key):
    from genppl import inference

    move = inference.MHMove(args.rejuvenate) if args.rejuvenate else None
    return inference.power_smc(lm, prompt_ids, args.n, args.max_new_tokens, key, alpha=args.alpha,
                               ramp_tokens=args.ramp_tokens, resampler=args.resampler,
                               ess_threshold=args.ess_threshold, move=move)


def run_power_rollout(lm, prompt_ids, args, key):
    from genppl import inference

    return inference.power_rollout(lm, prompt_ids, args.n, args.max_new_tokens, key, alpha=args.alpha,
                                   top_k=args.rollout_top_k, rollouts=args.rollouts, horizon=args.horizon,
                                   jackknife=not args.no_jackknife)


METHODS.update({"power-mh": run_power_mh, "power-smc": run_power_smc, "power-rollout": run_power_rollout})


def guided_potential(lm, prompt_ids, args):
    """The HMM x DFA guide of ``--method smc-guided`` (circuits.HMMGuide): an HMM loaded from
    ``--hmm`` or distilled from the LM's continuations of the prompt (once per prompt), and
    the DFA of ``--keywords`` (and ``--regex``); ``--ban`` strings are an extra factor."""
    from genppl import circuits
    from genppl import ppl

    cache = args.__dict__.setdefault("_guides", {})
    key = tuple(prompt_ids)
    if key not in cache:
        if args.hmm is not None:
            hmm = circuits.HMM.load(args.hmm)
        else:
            hmm, _ = circuits.distill_hmm(lm, prompt_ids, args.hmm_states, num_samples=args.hmm_samples,
                                          max_new_tokens=args.max_new_tokens, key=jax.random.key(args.seed),
                                          em_epochs=args.hmm_epochs)
        tdfa = circuits.constraint_dfa(lm, keywords=args.keywords or (), regex=args.regex)
        potential = circuits.HMMGuide(hmm, tdfa, args.max_new_tokens)
        if args.ban:
            potential = potential * ppl.BannedStrings(list(args.ban), lm)
        cache[key] = potential
    return cache[key]


def run_smc_guided(lm, prompt_ids, args, key):
    from genppl import inference
    from genppl import ppl

    program = ppl.Program(lm, prompt_ids, args.max_new_tokens, potential=guided_potential(lm, prompt_ids, args),
                          alpha=args.alpha, proposal=args.proposal)
    result = inference.smc(program, args.n, key, resampler=args.resampler, ess_threshold=args.ess_threshold)
    result.method = f"SMC with the HMM x DFA guide ({result.method})"
    return result


METHODS["smc-guided"] = run_smc_guided


def check_guided_args(args) -> None:
    """Checks of ``--method smc-guided`` and its options."""
    if args.method != "smc-guided":
        if getattr(args, "keywords", None) or getattr(args, "hmm", None) is not None:
            raise InputError(f"--keywords and --hmm apply to --method smc-guided, not --method {args.method}")
        return
    if not args.keywords and args.regex is None:
        raise InputError("--method smc-guided needs a constraint: give --keywords WORD ... (or --regex)")
    for name in ("hmm_states", "hmm_samples", "hmm_epochs"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.hmm is not None and not os.path.exists(args.hmm):
        raise InputError(f"--hmm {args.hmm}: no such file; save one with circuits.HMM.save "
                         "(or examples/keyword_guided.py --save-hmm PATH)")


def check_power_args(args) -> None:
    """Defaults and checks of the power-sampling options (alpha defaults to 4 for them)."""
    if args.alpha is None:
        args.alpha = 4.0 if args.method in POWER_METHODS else 1.0
    for name, low in (("block_size", 1), ("num_mcmc", 0), ("ramp_tokens", 0), ("rejuvenate", 0),
                      ("rollouts", 1), ("rollout_top_k", 1), ("horizon", 1)):
        value = getattr(args, name)
        if value is not None and value < low:
            raise InputError(f"--{name.replace('_', '-')} must be an integer >= {low}, got {value}")
    if args.method in POWER_METHODS and (args.ban or args.regex is not None):
        raise InputError(f"--method {args.method} samples p^alpha alone: drop --ban/--regex, or use "
                         f"--method smc --alpha {args.alpha:g} for a constrained power target")
    if args.rejuvenate and args.ramp_tokens:
        raise InputError("--rejuvenate needs a constant alpha: drop --ramp-tokens or --rejuvenate")


def power_cost(out, args) -> dict:
    """Per-prompt cost of a power method: tokens sampled per sample (every proposal and
    rollout; for SMC one token per particle per step), and the MH acceptance rate."""
    if hasattr(out, "tokens_generated"):
        stats = {"tokens_generated_per_sample": float(np.mean(out.tokens_generated))}
        if out.acceptance is not None and len(out.acceptance):
            stats["acceptance"] = float(np.mean(out.acceptance))
        return stats
    return {"tokens_generated_per_sample": float(len(out.ess))}


def encode_prompt(lm, text: str) -> list[int]:
    """Token ids of a prompt: the document separator (BOS, else EOS) and then the text."""
    tok = lm.tokenizer
    start = tok.bos_id if tok.bos_id is not None else lm.eos_id
    return [start] + tok.encode(text)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="genppl", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--model", default=None, help="local Hugging Face checkpoint directory (default: bundled)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--method", default="sample", choices=list(METHODS),
                   help="sample: plain sampling; smc: sequential Monte Carlo; smc-steer: SMC with "
                        "without-replacement selection; pf: step-level reward particle filter; "
                        "power-mh, power-smc, power-rollout: power sampling of p(x)^alpha")
    p.add_argument("--task", default="arithmetic", choices=["arithmetic", "sentences"],
                   help="evaluation task of the bundled model (ignored with --prompt)")
    p.add_argument("--prompt", default=None, help="generate from this text instead of a task")
    p.add_argument("--problems", type=int, default=16, help="number of task prompts")
    p.add_argument("--n", type=int, default=8, help="samples (particles) per prompt")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: 96 (arithmetic), 32 otherwise")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature (sample only; default 1)")
    p.add_argument("--top-k", type=int, default=None, help="sample only")
    p.add_argument("--top-p", type=float, default=None, help="sample only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--show", type=int, default=3, help="samples to print")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    smc = p.add_argument_group("SMC methods (smc, smc-steer, pf)")
    smc.add_argument("--resampler", default="systematic",
                     choices=["systematic", "multinomial", "stratified", "residual"])
    smc.add_argument("--ess-threshold", type=float, default=None,
                     help="resample when ESS < this * n (default 0.5; 1.0 for pf: whenever the weights differ)")
    smc.add_argument("--proposal", default="optimal", choices=["optimal", "prior"],
                     help="optimal: q ∝ p^alpha * token-level constraints; prior: the LM itself")
    smc.add_argument("--alpha", type=float, default=None,
                     help="target p(x)^alpha * phi(x) (default 1; 4 for the power methods)")
    smc.add_argument("--ban", action="append", default=[], metavar="STRING",
                     help="a string the generation may never contain (repeatable; ppl.BannedStrings)")
    smc.add_argument("--regex", default=None, help="the generation must match this regex (ppl.Regex)")
    smc.add_argument("--beta", type=float, default=1.0, help="pf: reward exponent")
    smc.add_argument("--pf-target", default="final", choices=["final", "product"],
                     help="pf: p(x) r(x)^beta (final) or p(x) prod_k r(x_<=k)^beta (product)")
    power = p.add_argument_group("power sampling of p(x)^alpha (power-mh, power-smc, power-rollout; "
                                 "--alpha defaults to 4; power-smc also takes --resampler, --ess-threshold)")
    power.add_argument("--block-size", type=int, default=16, help="power-mh: tokens per block B")
    power.add_argument("--num-mcmc", type=int, default=4, help="power-mh: MH steps per block")
    power.add_argument("--mh-move", default="suffix", choices=["suffix", "independent"],
                       help="power-mh: regenerate from a uniform position, or from the prompt")
    power.add_argument("--ramp-tokens", type=int, default=0, help="power-smc: ramp alpha up over these tokens")
    power.add_argument("--rejuvenate", type=int, default=0, help="power-smc: MH moves after each resampling")
    power.add_argument("--rollouts", type=int, default=4, help="power-rollout: rollouts M per candidate")
    power.add_argument("--rollout-top-k", type=int, default=4, help="power-rollout: candidate tokens K")
    power.add_argument("--horizon", type=int, default=None, help="power-rollout: rollout length (default: to the end)")
    power.add_argument("--no-jackknife", action="store_true", help="power-rollout: plain (biased) zeta estimate")
    learned = p.add_argument_group("learned proposal (smc; train one with examples/learned_proposal.py --save PATH)")
    learned.add_argument("--learned", default=None, metavar="PATH",
                         help="smc: propose with the LoRA adapter of this training checkpoint (.npz)")
    learned.add_argument("--learned-rank", type=int, default=4, help="the LoRA rank it was trained with")
    guided = p.add_argument_group("HMM-guided SMC (smc-guided: an HMM distilled from the LM x a keyword DFA; "
                                  "also takes --resampler, --ess-threshold, --regex, --ban)")
    guided.add_argument("--keywords", nargs="+", default=None, metavar="WORD",
                        help="smc-guided: every one of these words must appear (whole words, any order)")
    guided.add_argument("--hmm", default=None, metavar="PATH", help="smc-guided: load this HMM (.npz) "
                        "instead of distilling one")
    guided.add_argument("--hmm-states", type=int, default=32, help="smc-guided: hidden states to distil")
    guided.add_argument("--hmm-samples", type=int, default=2048, help="smc-guided: LM samples to distil from")
    guided.add_argument("--hmm-epochs", type=int, default=5, help="smc-guided: EM epochs")
    args = p.parse_args(argv)
    try:
        check_args(args)
    except InputError as err:
        p.error(str(err))  # "genppl: error: ...", exit 2
    return args


def check_args(args) -> None:
    """Validate option combinations with messages that say what to change."""
    check_power_args(args)
    check_guided_args(args)
    if getattr(args, "learned", None) is not None:
        if args.method != "smc":
            raise InputError(f"--learned applies to --method smc, not --method {args.method}")
        if not os.path.exists(args.learned):
            raise InputError(f"--learned {args.learned}: no such checkpoint; train one with "
                             "examples/learned_proposal.py --save PATH")
        if args.learned_rank < 1:
            raise InputError(f"--learned-rank must be a positive integer, got {args.learned_rank}")
    for name in ("problems", "n", "max_new_tokens"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if args.show < 0:
        raise InputError(f"--show must be >= 0, got {args.show}")
    if args.max_new_tokens is None:
        args.max_new_tokens = 96 if args.prompt is None and args.task == "arithmetic" else 32
    if args.method == "sample":
        used = [f"--{n.replace('_', '-')}" for n in ("ban", "regex") if getattr(args, n)]
        if used:
            raise InputError(f"{' and '.join(used)} constrain{'s' if len(used) == 1 else ''} the "
                             "generation, which plain sampling cannot do: add --method smc")
        args.temperature = 1.0 if args.temperature is None else args.temperature
        return
    sampling = [f"--{n.replace('_', '-')}" for n in ("temperature", "top_k", "top_p")
                if getattr(args, n) is not None]
    if sampling:
        raise InputError(f"{', '.join(sampling)} appl{'ies' if len(sampling) == 1 else 'y'} to "
                         f"--method sample; --method {args.method} targets p^alpha * phi: use "
                         "--alpha and --proposal instead")
    if args.method == "pf" and (args.prompt is not None or args.task != "arithmetic"):
        raise InputError("--method pf scores worked equations, so it needs the arithmetic task: "
                         "drop --prompt and use --task arithmetic (or use --method smc)")
    if args.ess_threshold is None:
        args.ess_threshold = 1.0 if args.method == "pf" else 0.5
    if not 0.0 <= args.ess_threshold <= 1.0:
        raise InputError(f"--ess-threshold must lie in [0, 1], got {args.ess_threshold}")
    if not (args.alpha > 0 and math.isfinite(args.alpha)):
        raise InputError(f"--alpha must be a positive number, got {args.alpha}")
    if not (args.beta > 0 and math.isfinite(args.beta)):
        raise InputError(f"--beta must be a positive number, got {args.beta}")
    if args.method == "smc-steer" and args.ess_threshold != 0.5:
        raise InputError("--ess-threshold does not apply to --method smc-steer, which selects "
                         "children at every token; drop it or use --method smc")
    if any(not s for s in args.ban):
        raise InputError("--ban needs a non-empty string")


def step_delimiter(lm, delimiter: str) -> str:
    """The step boundary to give a Program for ``delimiter``.

    A program ends a step after a token whose bytes contain the delimiter. Byte-level BPE
    tokenizers glue a space to the word after it, so no token may contain ``". "``; the step
    then ends at the token holding ``"."`` (the same boundary: the space opens the next step).
    """
    if any(delimiter.encode() in b for b in lm.tokenizer.token_bytes):
        return delimiter
    stripped = delimiter.strip()
    if stripped and any(stripped.encode() in b for b in lm.tokenizer.token_bytes):
        return stripped
    raise InputError(f"no token of this tokenizer contains the step delimiter {delimiter!r}")


def equations_hold(text: str) -> bool:
    """Step verifier for arithmetic: every equation written so far is right (vacuously true
    before the first one)."""
    from genppl.tasks import arithmetic

    return all(arithmetic.step_checks(text))


def step_reward(texts: list[str]) -> list[float]:
    """Reward of partial arithmetic solutions for ``--method pf``: WRONG_STEP_REWARD to the
    power of the number of wrong equations (1.0 while every step holds)."""
    from genppl.tasks import arithmetic

    return [WRONG_STEP_REWARD ** (len(c) - sum(c)) for c in map(arithmetic.step_checks, texts)]


def build_potential(lm, args):
    """The potential phi of an SMC method (built once per run, so that every prompt reuses
    one compiled sweep) and the program's step delimiter. Sets ``args.potential`` and
    ``args.step_delimiter``."""
    from genppl import ppl

    factors = []
    delimiter = None
    if args.prompt is None and args.task == "arithmetic":
        from genppl.tasks import arithmetic

        delimiter = step_delimiter(lm, arithmetic.STEP_DELIMITER)
        if args.method == "pf":
            factors.append(ppl.StepReward(step_reward, lm.tokenizer, target=args.pf_target, beta=args.beta))
        else:
            factors.append(ppl.StepVerifier(equations_hold, lm.tokenizer))
    if args.ban:
        if not hasattr(ppl, "BannedStrings"):
            raise InputError("--ban needs ppl.BannedStrings, which this version of ppl does not have")
        factors.append(ppl.BannedStrings(list(args.ban), lm))
    if args.regex is not None:
        if not hasattr(ppl, "Regex"):
            raise InputError("--regex needs ppl.Regex, which this version of ppl does not have")
        factors.append(ppl.Regex(args.regex, lm))
    potential = None
    for f in factors:
        potential = f if potential is None else potential * f
    args.potential, args.step_delimiter = potential, delimiter


def jobs(args):
    """(prompt text, scorer) pairs; a scorer maps the outcome of one prompt (texts, and the
    weighted SMC result or None) to a dict of per-prompt metrics (None for a free prompt)."""
    if args.prompt is not None:
        return [(args.prompt, None)]
    if args.task == "arithmetic":
        from genppl.tasks import arithmetic

        def scorer(problem):
            def score(texts, result):
                answers = [arithmetic.extract_answer(t) for t in texts]
                correct = np.array([a == problem.answer for a in answers], float)
                if result is None:
                    voters = answers
                    metrics = {"accuracy": correct.mean()}
                else:  # weighted particles: the dead ones (weight 0) do not vote
                    w = result.weights
                    voters = [a for a, wi in zip(answers, w) if wi > 0]
                    metrics = {"accuracy": float(np.dot(w, correct))}
                voted = collections.Counter(a for a in voters if a is not None).most_common(1)
                metrics["majority_vote_accuracy"] = float(bool(voted) and voted[0][0] == problem.answer)
                if result is not None:
                    best = result.best_answer(arithmetic.extract_answer)
                    metrics["weighted_vote_accuracy"] = float(best == problem.answer)
                return metrics
            return score

        return [(arithmetic.prompt_text(pb), scorer(pb)) for pb in arithmetic.eval_problems(args.problems)]
    from genppl.tasks import sentences

    def score(texts, result):
        ok = np.array([sentences.is_well_formed(t) for t in texts], float)
        out = {"well_formed": float(ok.mean() if result is None else np.dot(result.weights, ok))}
        if getattr(args, "keywords", None):  # smc-guided: the (weighted) share using every keyword
            kw = np.array([sentences.satisfies_keywords(t, args.keywords) for t in texts], float)
            out["keywords_satisfied"] = float(kw.mean() if result is None else np.dot(result.weights, kw))
        return out

    return [(sentences.prompt_text(), score)] * args.problems


def _tokens(out) -> int:
    if isinstance(out, models.Samples):
        return int(out.num_tokens.sum())
    return sum(len(ids) for ids in out.token_ids)


def run(args) -> dict:
    lm = models.load(args.model, dtype=args.dtype)
    if args.method in SMC_METHODS:
        build_potential(lm, args)
    method = METHODS[args.method]
    key = jax.random.key(args.seed)
    work = jobs(args)
    tokens, elapsed = 0, 0.0
    metrics = collections.defaultdict(list)
    smc_stats = collections.defaultdict(list)
    power_stats = collections.defaultdict(list)
    shown = []
    for text, score in tqdm(work, desc=args.method, unit="prompt", disable=len(work) == 1):
        key, sub = jax.random.split(key)
        started = time.perf_counter()
        out = method(lm, encode_prompt(lm, text), args, sub)
        elapsed += time.perf_counter() - started
        tokens += _tokens(out)
        if args.method in POWER_METHODS:
            for name, value in power_cost(out, args).items():
                power_stats[name].append(value)
        result = None if isinstance(out, models.Samples) else out
        if result is not None:
            smc_stats["log_z"].append(result.log_z)
            smc_stats["mean_ess"].append(float(np.mean(result.ess)) if len(result.ess) else float(args.n))
            smc_stats["final_ess"].append(result.final_ess)
            smc_stats["resamplings"].append(result.num_resampling)
            smc_stats["all_dead"].append(result.message is not None)
        if score is not None:
            for name, value in score(out.texts, result).items():
                metrics[name].append(value)
        if len(shown) < args.show:
            order = range(len(out.texts)) if result is None else np.argsort(-result.log_weights, kind="stable")
            shown += [(text, out.texts[i]) for i in list(order)[: args.show - len(shown)]]
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
    if smc_stats:
        log_z = np.array(smc_stats["log_z"], float)
        finite = log_z[np.isfinite(log_z)]
        summary.update({
            "resampler": args.resampler if args.method != "smc-steer" else "without-replacement selection",
            "proposal": args.proposal,
            "alpha": args.alpha,
            # mean over prompts whose particles did not all die (null when every run died)
            "log_z": round(float(finite.mean()), 4) if finite.size else None,
            "all_particles_dead": int(np.sum(smc_stats["all_dead"])),
            "mean_ess": round(float(np.mean(smc_stats["mean_ess"])), 3),
            "final_ess": round(float(np.mean(smc_stats["final_ess"])), 3),
            "resamplings": int(np.sum(smc_stats["resamplings"])),
        })
    if power_stats:
        summary["alpha"] = args.alpha
        summary.update({name: round(float(np.mean(v)), 4) for name, v in power_stats.items()})
    summary["examples"] = [{"prompt": p, "completion": c} for p, c in shown]
    return summary


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        summary = run(args)
    except (InputError, ValueError, FileNotFoundError, OSError) as err:
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
