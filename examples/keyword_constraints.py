"""Keyword constraints of growing size: the HMM x DFA guide against the DFA mask and against
rejection sampling, for 1 to 4 keywords (Ctrl-G, in miniature).

    python examples/keyword_constraints.py                          # dog / ball / park / carries
    python examples/keyword_constraints.py --keywords cat kite garden finds --n 32

For k = 1..4 the first k keywords must all appear as whole words; same N sequences per
method: rejection sampling (N samples from the LM, keep those that satisfy the keywords),
SMC with the keyword DFA as a mask (``ppl.DFAPotential``: only "still possible"), SMC with
the HMM x DFA guide (``circuits.HMMGuide``: "how likely by the end", from an HMM distilled
once from the LM). Printed: whether the method returned a satisfying sentence, its log p under
the LM, and whether it is a well-formed sentence of the task's vocabulary. The full
comparison, over many keyword sets with intervals and a grammar check, is
``benchmarks/compare_ctrlg.py``.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

from genppl import circuits, models, ppl
from genppl.cli.methods import encode_prompt
from genppl.inference import smc
from genppl.tasks import sentences


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint directory (default: bundled)")
    p.add_argument("--keywords", nargs=4, default=["dog", "ball", "park", "carries"])
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--hmm-states", type=int, default=16)
    p.add_argument("--hmm-samples", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    lm = models.load(args.model)
    prompt = encode_prompt(lm, sentences.prompt_text())
    T, n = args.max_new_tokens, args.n
    hmm, _ = circuits.distill_hmm(lm, prompt, args.hmm_states, num_samples=args.hmm_samples, max_new_tokens=T,
                                  key=jax.random.key(args.seed), em_epochs=1)
    rows = []
    for k in range(1, 5):
        keywords = [w.lower() for w in args.keywords[:k]]
        key = jax.random.fold_in(jax.random.key(args.seed + 1), k)
        plain = models.sample(lm, prompt, n, T, key)
        hits = [i for i, t in enumerate(plain.texts) if sentences.satisfies_keywords(t, keywords)]
        out = {"rejection sampling": (plain.texts[hits[0]], float(plain.log_probs[hits[0]])) if hits else None}
        tdfa = circuits.constraint_dfa(lm, keywords=keywords)
        for name, potential in (("DFA mask SMC", ppl.DFAPotential(tdfa)), ("HMM x DFA guide", circuits.HMMGuide(hmm, tdfa, T))):
            result = smc.run(ppl.Program(lm, prompt, T, potential=potential), n, key)
            live = result.weights > 0
            out[name] = None if not live.any() else (result.best(), float(result.weights @ np.where(live, result.log_p, 0.0)))
        for name, got in out.items():
            ok = got is not None and sentences.satisfies_keywords(got[0], keywords)
            rows.append({"k": k, "method": name, "success": ok, "log_p": got[1] if got else None,
                         "well_formed": bool(got and sentences.is_well_formed(got[0]))})
            text = "-" if got is None else f"{got[0].strip()!r} (log p {got[1]:.1f})"
            print(f"k={k} {name:18s} {'ok ' if ok else 'no '} {text}", flush=True)
    guided = [r for r in rows if r["method"] == "HMM x DFA guide"]
    print(f"HMM x DFA guide satisfied {sum(r['success'] for r in guided)} of 4 keyword sets")
    ok = all(r["success"] for r in rows if r["method"] != "rejection sampling" and r["log_p"] is not None)
    print(f"check (every SMC output that survived satisfies its keywords): {'ok' if ok else 'FAILED'}")
    return {"rows": rows, "check": ok}


if __name__ == "__main__":
    main()
