"""Keyword-constrained sentences with an HMM distilled from the LM (Ctrl-G style guidance).

    python examples/keyword_guided.py                          # dog, ball, park on the bundled model
    python examples/keyword_guided.py --keywords cat garden sleeps --n 64
    python examples/keyword_guided.py --hmm-states 64 --save-hmm /tmp/hmm.npz
    python examples/keyword_guided.py --hmm /tmp/hmm.npz       # reuse a distilled HMM

Target: pi(x) ∝ p_LM(x | "S:") * 1[x uses every keyword as a whole word] (at most
``--max-new-tokens`` tokens). Three methods, same model, same particle count:

* plain sampling from the LM (the constraint is only checked afterwards);
* SMC with the keyword DFA as a mask (``ppl.DFAPotential``, locally optimal proposal): it
  only knows which tokens keep the constraint *possible*, so particles postpone the keywords
  and run out of tokens;
* SMC with the HMM x DFA guide (:class:`circuits.HMMGuide`): every next token is weighted
  by p_HMM(all keywords appear by the end | prefix, token), so the proposal plans ahead.

The HMM is distilled first (:func:`circuits.distill_hmm`: LM samples, k-means on the LM's
next-token distributions, EM). For each method the script reports the share of outputs
that satisfy the constraint, the (weighted) mean LM log-likelihood of the outputs, and for
SMC the final ESS and the log Z estimate (log P(constraint) under the LM).
"""

from __future__ import annotations

import argparse
import time


import jax
import numpy as np

from genppl import circuits
from genppl import models, ppl
from genppl.inference import smc
from genppl.tasks import sentences


def sentence_prompt(lm) -> list[int]:
    tok = lm.tokenizer
    return [tok.bos_id if tok.bos_id is not None else lm.eos_id] + tok.encode(sentences.prompt_text())


def summarise(name, texts, log_p, weights, keywords, seconds, result=None) -> dict:
    """Share of outputs (with positive weight) satisfying the keywords, and weighted log p."""
    weights = np.asarray(weights, np.float64)
    ok = np.array([sentences.satisfies_keywords(t, keywords) for t in texts], float)
    live = weights > 0
    row = {
        "method": name,
        "satisfied": float(ok[live].mean()) if live.any() else float("nan"),
        "live": int(live.sum()),
        "lm_log_likelihood": float(np.dot(weights, log_p)) if live.any() else float("nan"),
        "seconds": round(seconds, 2),
    }
    if result is not None:
        row["final_ess"] = result.final_ess
        row["log_z"] = result.log_z
    return row


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint directory (default: bundled)")
    p.add_argument("--keywords", nargs="+", default=["dog", "ball", "park"])
    p.add_argument("--n", type=int, default=32, help="particles / samples")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--hmm-states", type=int, default=32)
    p.add_argument("--hmm-samples", type=int, default=2048, help="LM samples to distil the HMM from")
    p.add_argument("--em-epochs", type=int, default=5)
    p.add_argument("--hmm", default=None, help="load a distilled HMM (.npz) instead of distilling")
    p.add_argument("--save-hmm", default=None, help="save the distilled HMM here (.npz)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    keywords = [k.lower() for k in args.keywords]
    T = args.max_new_tokens

    lm = models.load(args.model)
    prompt = sentence_prompt(lm)
    key_hmm, key_plain, key_mask, key_guide = jax.random.split(jax.random.key(args.seed), 4)
    started = time.perf_counter()
    if args.hmm:
        hmm = circuits.HMM.load(args.hmm)
    else:
        hmm, info = circuits.distill_hmm(lm, prompt, args.hmm_states, num_samples=args.hmm_samples,
                                         max_new_tokens=T, key=key_hmm, em_epochs=args.em_epochs)
        print(f"distilled a {args.hmm_states}-state HMM from {args.hmm_samples} samples in "
              f"{time.perf_counter() - started:.1f}s; mean log-likelihood per sentence "
              f"{info['init_log_likelihood']:.2f} (clustering) -> {info['em_log_likelihood'][-1]:.2f} (EM)")
        if args.save_hmm:
            hmm.save(args.save_hmm)
    tdfa = circuits.constraint_dfa(lm, keywords=keywords)
    guide = circuits.HMMGuide(hmm, tdfa, T)
    rows = []

    t0 = time.perf_counter()
    plain = models.sample(lm, prompt, args.n, T, key_plain)
    rows.append(summarise("plain sampling", plain.texts, plain.log_probs, np.full(args.n, 1.0 / args.n),
                          keywords, time.perf_counter() - t0))
    for name, potential, key in (("SMC, DFA mask", ppl.DFAPotential(tdfa), key_mask),
                                 ("SMC, HMM guide", guide, key_guide)):
        program = ppl.Program(lm, prompt, T, potential=potential)
        t0 = time.perf_counter()
        result = smc.run(program, args.n, key)
        rows.append(summarise(name, result.texts, result.log_p, result.weights, keywords,
                              time.perf_counter() - t0, result))
        if name.endswith("guide"):
            best = result.best()

    print(f"\nkeywords: {', '.join(keywords)}; {args.n} particles, at most {T} tokens; {guide!r}")
    print(f"{'method':<18}{'satisfied':>10}{'live':>6}{'E[log p]':>10}{'final ESS':>11}{'log Z':>9}{'sec':>7}")
    for r in rows:
        print(f"{r['method']:<18}{r['satisfied']:>10.2f}{r['live']:>6}{r['lm_log_likelihood']:>10.2f}"
              f"{r.get('final_ess', float('nan')):>11.1f}{r.get('log_z', float('nan')):>9.2f}{r['seconds']:>7.1f}")
    print(f"best guided sentence: {best!r}")
    return {"keywords": keywords, "rows": rows, "best": best}


if __name__ == "__main__":
    main()
