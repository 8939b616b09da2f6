"""A sentence that uses given keywords (CommonGen-style), by SMC with a twisted constraint.

    python examples/keyword_sentence.py                       # dog, ball, park on the bundled model
    python examples/keyword_sentence.py --keywords cat garden sleeps --n 64
    python examples/keyword_sentence.py --model DIR --n 8 --max-new-tokens 16

Target: p(x | "S:") restricted to sentences that use every keyword,
pi(x) ∝ p(x) * 1[every keyword is a word of x], written as two factors:

* :class:`KeywordGuide`, a token-level potential written here in a few lines of JAX. It
  forbids the full stop (and EOS, and the length cap) until every keyword token has been
  written, and carries the twist psi(prefix) = exp(-bonus * keywords still missing): with
  the locally optimal proposal a keyword not yet used is ``exp(bonus)`` times likelier to be
  proposed, and particles that have used more keywords weigh more at resampling. psi is 1
  once every keyword is in, so it telescopes away and leaves the target exact.
* ``all_keywords``, a host-side check of the finished text (whole words; it also enforces
  keywords that take several tokens, which the guide cannot see).

Plain sampling from the same model runs alongside for comparison.
"""

from __future__ import annotations

import argparse
import math


import jax
import jax.numpy as jnp

from genppl import models, ppl
from genppl.inference import smc
from genppl.tasks import sentences


class KeywordGuide(ppl.Potential):
    """No full stop, EOS or cap before every keyword token is used, with the twist
    psi = exp(-bonus * missing keywords) (psi of the empty prefix is 1, so the first
    increment carries -bonus * K). State: which keywords each particle has used, [n, K]."""

    token_level = True

    def __init__(self, keyword_ids, stop_ids, bonus: float):
        self.keyword_ids = jnp.asarray(keyword_ids, jnp.int32)
        self.stop_ids = jnp.asarray(stop_ids, jnp.int32)  # "." and EOS
        self.bonus = float(bonus)

    def init(self, lm_state):
        return jnp.zeros((lm_state.length.shape[0], self.keyword_ids.shape[0]), bool)

    def logw_next(self, used, lm_state):
        n, vocab = lm_state.logits.shape
        fresh = jnp.zeros((n, vocab)).at[:, self.keyword_ids].add(self.bonus * ~used)
        done = used.all(-1)[:, None]
        stop = jnp.zeros((vocab,), bool).at[self.stop_ids].set(True)[None]
        first = jnp.where(lm_state.num_generated == 0, -self.bonus * used.shape[1], 0.0)[:, None]
        return jnp.where(stop & ~done, -jnp.inf, fresh + first)

    def update(self, used, lm_state, token):
        return used | (token[:, None] == self.keyword_ids[None])

    def logw_cap(self, used, lm_state):
        return jnp.where(used.all(-1), 0.0, -jnp.inf)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint directory (default: bundled)")
    p.add_argument("--keywords", nargs="+", default=["dog", "ball", "park"])
    p.add_argument("--n", type=int, default=32, help="particles")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--bonus", type=float, default=3.0, help="twist: log psi per keyword used so far")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    keywords = [k.lower() for k in args.keywords]

    lm = models.load(args.model)
    tok = lm.tokenizer
    prompt = [lm.eos_id] + tok.encode(sentences.prompt_text())  # BOS (= EOS) then "S:"

    def all_keywords(text: str) -> float:
        return 0.0 if sentences.satisfies_keywords(text, keywords) else -math.inf

    # keywords that are one token (" dog") are guided; "." and EOS wait for them
    single = [ids[0] for ids in (tok.encode(" " + k) for k in keywords) if len(ids) == 1]
    stops = [lm.eos_id] + [t for t, b in enumerate(tok.token_bytes) if b"." in b]
    guide = KeywordGuide(single, stops, args.bonus)
    potential = guide * ppl.HostScorer(all_keywords, tok, batched=False)
    program = ppl.Program(lm, prompt, args.max_new_tokens, potential=potential)
    key_smc, key_plain = jax.random.split(jax.random.key(args.seed))
    result = smc.run(program, args.n, key_smc, ess_threshold=0.5)
    print(result.summary())

    live = [t for t, w in zip(result.texts, result.weights) if w > 0]
    satisfied = sum(sentences.satisfies_keywords(t, keywords) for t in result.texts)
    plain = models.sample(lm, prompt, args.n, args.max_new_tokens, key_plain)
    plain_satisfied = sum(sentences.satisfies_keywords(t, keywords) for t in plain.texts)
    best = result.best()
    print(f"\nkeywords: {', '.join(keywords)}")
    print(f"SMC: {satisfied}/{args.n} particles use every keyword ({len(live)} with weight > 0); "
          f"log Z = {result.log_z:.3f} (estimates log P(all keywords) under the model)")
    print(f"plain sampling: {plain_satisfied}/{args.n} samples use every keyword")
    print(f"weighted best: {best!r}")
    # check: every particle with positive weight uses every keyword
    ok = all(sentences.satisfies_keywords(t, keywords) for t in live)
    print(f"check (live particles use every keyword): {'ok' if ok else 'FAILED'}")
    return {"keywords": keywords, "satisfied": satisfied, "live": len(live), "n": args.n,
            "plain_satisfied": plain_satisfied, "best": best, "log_z": result.log_z,
            "check": ok, "result": result}


if __name__ == "__main__":
    main()
