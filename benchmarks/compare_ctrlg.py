"""Constrained generation (Ctrl-G): keyword-constrained sentences with the HMM x DFA guide,
against the DFA mask with the locally optimal proposal and against rejection sampling.

    python benchmarks/compare_ctrlg.py                 # 12 keyword sets per size 1-4, N = 32
    python benchmarks/compare_ctrlg.py --quick         # 2 sets per size, N = 16, a smaller HMM fit

Target, per keyword set K: pi(x) ∝ p_LM(x | "S:") * 1[x uses every keyword of K as a whole
word], at most ``--max-new-tokens`` tokens. Keyword sets of 1-4 content words are drawn so
that one sentence of the grammar (tasks.sentences) uses them all: a subject, a transitive
verb, a thing and a place, "the S V a T to the P." (a random k of the four). Per set, with
the same N sequences each:

* **rejection sampling**: N samples from the LM; the first that satisfies K is the answer
  (none: a failure);
* **DFA mask + locally optimal SMC** (``ppl.DFAPotential``): the mask knows which tokens keep
  K satisfiable at all, not within the tokens left;
* **HMM x DFA guide** (``circuits.HMMGuide``): each next token is weighted by
  p_HMM(K satisfied by the end | prefix, token), with one HMM distilled once from the LM's
  continuations of "S:" (``circuits.distill_hmm``) and shared by every set.

Columns: success rate (the method returns a sentence that satisfies K; an SMC run succeeds
when some particle is alive at the end), E[log p_LM] of the returned sentences (the weighted
mean over live particles; rejection: the mean over accepted samples), and fluency: the
(weighted) share of returned sentences that parse under the grammar's five sentence shapes
(``tasks.sentences.is_grammatical``). 95% intervals over keyword sets (Wilson for success, bootstrap
otherwise). The HMM size and fit are fixed in advance (no tuning).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import testbed  # noqa: E402

from genppl import circuits, models, ppl  # noqa: E402
from genppl.cli.methods import encode_prompt  # noqa: E402
from genppl.inference import smc  # noqa: E402
from genppl.ppl.automata import TokenDFA  # noqa: E402
from genppl.tasks import sentences as S  # noqa: E402

METHODS = ("rejection sampling", "DFA mask + locally optimal SMC", "HMM x DFA guide (SMC)")


# ---- keyword sets ---------------------------------------------------------------------------
def keyword_sets(k: int, n: int, seed: int) -> list[tuple[str, ...]]:
    """``n`` sets of ``k`` keywords (1..4), each a subset of (subject, transitive verb, thing,
    place) of one sentence "the S V a T to/in the P.", so every set is satisfiable."""
    if not 1 <= k <= 4:
        raise ValueError(f"k must be in 1..4, got {k}")
    rng = random.Random(f"{seed}/ctrlg/{k}")
    out = []
    for _ in range(n):
        words = (rng.choice(S.ANIMATES), rng.choice(list(S.TRANSITIVE_VERBS)), rng.choice(S.THINGS),
                 rng.choice(S.PLACES))
        out.append(tuple(rng.sample(words, k)))
    return out


def pad_dfa(tdfa: TokenDFA, size: int) -> TokenDFA:
    """The same automaton with unreachable, non-live states appended up to ``size`` states,
    so that keyword sets of similar size share one compiled SMC sweep (shapes are equal)."""
    s = tdfa.num_states
    if size <= s:
        return tdfa
    extra = size - s
    table = np.concatenate([tdfa.table, np.full((extra, tdfa.table.shape[1]), tdfa.dead, tdfa.table.dtype)])
    accepting = np.concatenate([tdfa.accepting, np.zeros(extra, bool)])
    live = np.concatenate([tdfa.live, np.zeros(extra, bool)])
    byte_state = None if tdfa.byte_state is None else \
        np.concatenate([tdfa.byte_state, np.full(extra, tdfa.byte_state[tdfa.dead], tdfa.byte_state.dtype)])
    return TokenDFA(table, accepting, live, tdfa.start, tdfa.dead, tdfa.eos_ids, byte_state)


def padded_size(s: int) -> int:
    return 1 << max(4, (s - 1).bit_length())


# ---- the comparison -------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint directory (default: bundled)")
    p.add_argument("--sets", type=int, default=None, help="keyword sets per size (default 12; --quick 2)")
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 3, 4])
    p.add_argument("--n", type=int, default=None, help="sequences per set (default 32; --quick 16)")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--hmm-states", type=int, default=32)
    p.add_argument("--hmm-samples", type=int, default=None, help="LM samples for the HMM (default 2048; --quick 512)")
    p.add_argument("--em-epochs", type=int, default=None, help="EM epochs (default 5; --quick 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--results", default=str(testbed.RESULTS))
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.sets = args.sets or (2 if args.quick else 12)
    args.n = args.n or (16 if args.quick else 32)
    args.hmm_samples = args.hmm_samples or (512 if args.quick else 2048)
    args.em_epochs = args.em_epochs or (2 if args.quick else 5)
    return args


def summarise_smc(result, keywords) -> dict:
    w = np.asarray(result.weights, np.float64)
    live = w > 0
    if not live.any():
        return {"success": 0.0, "log_p": np.nan, "fluent": np.nan, "tokens": sum(map(len, result.token_ids))}
    ok = np.array([S.satisfies_keywords(t, keywords) for t in result.texts])
    fluent = np.array([S.is_grammatical(t) for t in result.texts], float)
    return {"success": float((w * ok).sum() > 0.5), "log_p": float(w @ np.where(live, result.log_p, 0.0)),
            "fluent": float(w @ fluent), "tokens": sum(map(len, result.token_ids))}


def run(args, lm, log=print):
    prompt = encode_prompt(lm, S.prompt_text())
    k_hmm, k_run = jax.random.split(jax.random.key(args.seed))
    started = time.perf_counter()
    hmm, info = circuits.distill_hmm(lm, prompt, args.hmm_states, num_samples=args.hmm_samples,
                                     max_new_tokens=args.max_new_tokens, key=k_hmm, em_epochs=args.em_epochs)
    hmm_seconds = time.perf_counter() - started
    log(f"  distilled a {args.hmm_states}-state HMM from {args.hmm_samples} samples in {hmm_seconds:.0f} s", flush=True)
    T, n = args.max_new_tokens, args.n
    table = {(m, k): {"success": [], "log_p": [], "fluent": [], "tokens": []} for m in METHODS for k in args.sizes}
    for k in args.sizes:
        t0 = time.perf_counter()
        for i, keywords in enumerate(keyword_sets(k, args.sets, args.seed)):
            key = jax.random.fold_in(jax.random.fold_in(k_run, k), i)
            k1, k2, k3 = jax.random.split(key, 3)
            plain = models.sample(lm, prompt, n, T, k1)
            hits = [j for j, t in enumerate(plain.texts) if S.satisfies_keywords(t, keywords)]
            row = table["rejection sampling", k]
            row["success"].append(float(bool(hits)))
            row["log_p"].append(float(np.mean(plain.log_probs[hits])) if hits else np.nan)
            row["fluent"].append(float(S.is_grammatical(plain.texts[hits[0]])) if hits else np.nan)
            row["tokens"].append(int(np.sum(plain.num_tokens)))
            tdfa = circuits.constraint_dfa(lm, keywords=keywords)
            tdfa = pad_dfa(tdfa, padded_size(tdfa.num_states))
            for name, potential, sub in (("DFA mask + locally optimal SMC", ppl.DFAPotential(tdfa), k2),
                                         ("HMM x DFA guide (SMC)", circuits.HMMGuide(hmm, tdfa, T), k3)):
                result = smc.run(ppl.Program(lm, prompt, T, potential=potential), n, sub,
                                 proposal=ppl.proposals.locally_optimal())
                for metric, value in summarise_smc(result, keywords).items():
                    table[name, k][metric].append(value)
        log(f"  {k} keyword(s): " + ", ".join(f"{m}: {np.mean(table[m, k]['success']):.2f}" for m in METHODS) +
            f" ({time.perf_counter() - t0:.0f} s)", flush=True)
    return table, {"seconds": hmm_seconds, **{k: v for k, v in info.items() if k == "init_log_likelihood"}}


def cell(values, digits=2):
    x = [v for v in values if np.isfinite(v)]
    if not x:
        return "-"
    return testbed.fmt_ci(testbed.interval(x, binary=False), digits) + (f" ({len(x)})" if len(x) < len(values) else "")


def render(args, table, hmm_info, seconds):
    header = ["keywords", "method", "success [95% CI]", "E[log p_LM] of outputs", "fluency (grammar)",
              "tokens / set"]
    rows = []
    for k in args.sizes:
        for m in METHODS:
            r = table[m, k]
            rows.append([k, m, testbed.fmt_ci(testbed.interval(r["success"], binary=True), 2), cell(r["log_p"]),
                         cell(r["fluent"]), f"{np.mean(r['tokens']):,.0f}"])
    cmd = testbed.command_line("compare_ctrlg", args)
    lm_desc = f"`{args.model}`" if args.model else "the bundled model"
    return (f"### (d) Constrained generation: HMM x DFA guide against the DFA mask and rejection sampling\n\n"
            f"`{cmd}` ({testbed.machine_line()}; {seconds / 60:.1f} min wall). Policy: {lm_desc}, prompt `S:`; "
            f"{args.sets} keyword sets per size, N = {args.n} sequences per set and method, at most "
            f"{args.max_new_tokens} new tokens; one {args.hmm_states}-state HMM distilled from {args.hmm_samples} "
            f"LM samples with {args.em_epochs} EM epochs ({hmm_info['seconds']:.0f} s, fixed in advance); seed "
            f"{args.seed}. Success: Wilson interval over sets; E[log p_LM] and fluency: bootstrap over the sets "
            f"with an output (their count in parentheses when some set had none).\n\n"
            + testbed.markdown_table(header, rows) + f"\n\n![success against keywords](figures/{testbed.figure_name('ctrlg', args.quick)}.png)\n")


def plot(table, sizes, results, name="ctrlg"):
    fig, (ax1, ax2) = testbed.new_figure(2, (4.8, 3.6))
    for m in METHODS:
        cis = [testbed.interval(table[m, k]["success"], binary=True) for k in sizes]
        ax1.errorbar(sizes, [c[0] for c in cis], yerr=np.array([[c[0] - c[1], c[2] - c[0]] for c in cis]).T,
                     marker="o", capsize=3, label=m)
        ax2.plot(sizes, [np.nanmean(table[m, k]["log_p"]) if np.isfinite(table[m, k]["log_p"]).any() else np.nan
                         for k in sizes], marker="o", label=m)
    ax1.set_xlabel("keywords")
    ax1.set_ylabel("success rate (95% CI)")
    ax2.set_xlabel("keywords")
    ax2.set_ylabel("E[log p_LM] of outputs")
    ax1.legend(fontsize=7)
    return testbed.save_figure(fig, name, results)


def main(argv=None):
    args = parse_args(argv)
    clock = testbed.Clock()
    lm = models.load(args.model)
    print(f"# (d) keyword-constrained sentences: {lm!r}, sizes {args.sizes}, {args.sets} sets, N {args.n}", flush=True)
    table, hmm_info = run(args, lm)
    text = render(args, table, hmm_info, clock.elapsed())
    print("\n" + text)
    if not args.no_write:
        print(f"figure: {plot(table, args.sizes, args.results, testbed.figure_name('ctrlg', args.quick))}")
        testbed.write_section("compare-ctrlg" + ("-quick" if args.quick else ""), text, args.results)
    return {"table": table}


if __name__ == "__main__":
    main()
