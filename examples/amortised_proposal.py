"""Amortised inference: one LoRA proposal trained across many prompts toward p(x)^alpha,
then reused by SMC on prompts it never saw (Hu et al.; variational reasoning).

    python examples/amortised_proposal.py                   # 8 steps, rank 4, alpha 4
    python examples/amortised_proposal.py --steps 60 --model reasoner   # on the reasoner model

Target for each word problem: pi(x) ∝ p(x)^alpha. The base proposal is the locally optimal
one for it (temperature 1/alpha); the learned proposal is that base tilted by a rank-4 LoRA
(``variational.Guide(proposal=models.LoRA(lm, rank=4))``), trained with the forward KL from
SMC samples (``variational.forward_kl``), one training problem per step: the programs differ
only in their prompts, so every step reuses one compiled training step, and the proposal is
amortised over prompts. On held-out problems the script compares the importance ESS / N
(one run without resampling) of the two proposals at equal particles. The full comparison,
with trajectory balance and intervals, is ``benchmarks/compare_amortised.py``.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
import optax

from genppl import models, ppl
from genppl.cli.methods import encode_prompt
from genppl.inference import smc, variational
from genppl.tasks import arithmetic


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint directory (default: bundled)")
    p.add_argument("--alpha", type=float, default=4.0)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--samples", type=int, default=4, help="samples per training step")
    p.add_argument("--n", type=int, default=8, help="particles at evaluation")
    p.add_argument("--problems", type=int, default=4, help="held-out problems to evaluate on")
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    lm = models.load(args.model)
    held_out = arithmetic.eval_problems(args.problems)
    rng = random.Random(args.seed)
    seen = {pb.question for pb in arithmetic.eval_problems(200)}
    train = [pb for pb in (arithmetic.generate_problem(rng) for _ in range(4 * args.steps)) if pb.question not in seen]

    def program(problem):
        return ppl.Program(lm, encode_prompt(lm, arithmetic.prompt_text(problem)), args.max_new_tokens,
                           alpha=args.alpha)

    guide = variational.Guide(proposal=models.LoRA(lm, rank=4))
    trainer = variational.Trainer(variational.forward_kl(guide, args.samples),
                                  optax.chain(optax.clip_by_global_norm(10.0), optax.adam(1e-2)), program(train[0]))
    state = trainer.init(args.seed)
    started = time.perf_counter()
    for step in range(args.steps):
        trainer.program = program(train[step % len(train)])  # a new prompt each step
        state, loss, _, _ = trainer.step(state)
    seconds = time.perf_counter() - started
    print(f"trained {args.steps} steps (forward KL from SMC) in {seconds:.1f} s, last loss {float(loss):.3f}")

    ess = {"base (locally optimal)": [], "learned LoRA": []}
    for i, problem in enumerate(held_out):
        prog = program(problem)
        for name, prg, proposal in (("base (locally optimal)", prog, ppl.proposals.locally_optimal()),
                                    ("learned LoRA", guide.program(state.params["guide"], prog), guide.proposal_fn)):
            result = smc.run(prg, args.n, args.seed + 100 + i, proposal=proposal, ess_threshold=0.0)
            ess[name].append(result.final_ess / args.n)
    for name, values in ess.items():
        print(f"{name:24s} importance ESS / N {np.mean(values):.3f} over {len(values)} held-out problems")
    ok = all(0.0 <= v <= 1.0 + 1e-6 for values in ess.values() for v in values) and np.isfinite(float(loss))
    print(f"check (training finite, ESS / N in [0, 1]): {'ok' if ok else 'FAILED'}")
    return {"ess": {k: float(np.mean(v)) for k, v in ess.items()}, "train_seconds": seconds, "check": ok}


if __name__ == "__main__":
    main()
