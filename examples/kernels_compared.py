"""Every new kernel on one constrained target, with its cost in tokens against plain sampling.

    python examples/kernels_compared.py                       # bundled model
    python examples/kernels_compared.py --n 8 --max-new-tokens 16
    python examples/kernels_compared.py --model DIR --n 4 --max-new-tokens 8

Target: pi(x) ∝ p(x | "S:")^alpha * 1[x avoids the letter "e"] (``ppl.BannedStrings``), the
same :class:`ppl.Program` for every method:

* particle Gibbs and PGAS chains (``smc.conditional.particle_gibbs``) and MH over the program
  (``mcmc.program_mh``), run by ``mcmc.run_chains`` with split R-hat and bulk/tail ESS;
* SMC with MH resample-move on this constrained program (``mcmc.program_move``);
* the search baselines (``inference.search``): best-of-N by importance weight, token-level beam
  search, self-consistency over the first word;
* two-sided log Z bounds (``smc.log_z_bounds``: SMC lower, conditional-SMC upper) and adaptive
  tempering of Power-SMC (``power.adaptive_power_smc``, on p^alpha alone).

The cost column counts LM transitions (one token for one particle), including replays: MH and
PGAS replay prefixes through the program, which is their price for working with any potential.
Plain sampling of n sequences costs n x (their lengths).
"""

from __future__ import annotations

import argparse

import jax

from genppl import models, ppl
from genppl.inference import mcmc, power, search, smc


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint directory (default: bundled)")
    p.add_argument("--prompt", default="S:")
    p.add_argument("--n", type=int, default=8, help="samples, particles, chains or beams")
    p.add_argument("--iterations", type=int, default=8, help="MCMC iterations per chain")
    p.add_argument("--alpha", type=float, default=2.0)
    p.add_argument("--max-new-tokens", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    lm = models.load(args.model)
    prompt = [lm.eos_id] + lm.tokenizer.encode(args.prompt)
    program = ppl.Program(lm, prompt, args.max_new_tokens, alpha=args.alpha,
                          potential=ppl.BannedStrings(["e", "E"], lm))
    key = jax.random.key(args.seed)
    keys = iter(jax.random.split(key, 16))
    n, t = args.n, args.max_new_tokens

    plain = models.sample(lm, prompt, n, t, next(keys))
    base = sum(len(ids) for ids in plain.token_ids)
    rows = [("plain sampling (no constraint)", base, "")]

    def add(name, tokens, note):
        rows.append((name, int(tokens), note))

    out = smc.run(program, n, next(keys))
    add("SMC", sum(len(i) for i in out.token_ids), f"log Z {out.log_z:.3f}")
    moved = smc.run(program, n, next(keys), move=mcmc.program_move(1))
    steps = len(moved.ess)  # the move at step s replays 2n rows over s steps: at most 2 n s tokens
    add("SMC + program MH move (bound)", sum(len(i) for i in moved.token_ids) + n * steps * (steps + 1),
        f"log Z {moved.log_z:.3f}")
    for name, kernel in (("particle Gibbs", smc.conditional.particle_gibbs(n)),
                         ("PGAS", smc.conditional.particle_gibbs(n, ancestor_sampling=True)),
                         ("MH over the program", mcmc.program_mh())):
        chains = mcmc.run_chains(program, kernel, 2, args.iterations, next(keys))
        d = chains.chain_diagnostics
        add(f"{name} (2 chains x {args.iterations})", chains.tokens,
            f"R-hat {d['rhat']:.2f}, bulk ESS {d['ess_bulk']:.1f}, acceptance {d['acceptance']:.2f}")
    best = search.best_of_n(program, n, next(keys), proposal=ppl.proposals.locally_optimal())
    add(f"best-of-{n} (importance weight)", best.tokens, repr(best.selected_text))
    beam = search.beam_search(program, n, next(keys))
    add(f"beam search (width {n})", beam.tokens, repr(beam.selected_text))
    vote = search.self_consistency(program, n, next(keys), extract=lambda s: (s.split() or [None])[0],
                                   proposal=ppl.proposals.locally_optimal())
    add("self-consistency (first word)", vote.tokens, f"answer {vote.answer!r}")
    bounds = smc.log_z_bounds(program, n, next(keys), runs=4, reference_particles=4 * n)
    add("log Z bounds (4 SMC + 4 CSMC runs)", 8 * n * t, f"{bounds.lower:.3f} <= log Z <= {bounds.upper:.3f}")
    tempered = power.adaptive_power_smc(lm, prompt, n, t, next(keys), alpha=4.0, target_ess=0.7)
    add("adaptive Power-SMC (alpha 4, pilot incl.)", sum(len(i) for i in tempered.token_ids) + tempered.pilot_tokens,
        f"schedule starts {[round(float(a), 2) for a in tempered.schedule[:4]]}")

    print(f"{'method':44s} {'tokens':>8s} {'x plain':>8s}  note")
    for name, tokens, note in rows:
        print(f"{name:44s} {tokens:8d} {tokens / max(base, 1):8.1f}  {note}")
    check = all(tok > 0 for _, tok, _ in rows) and bounds.lower <= bounds.upper + 1.0
    print(f"check (every method ran and spent tokens): {'ok' if check else 'FAILED'}")
    return {"rows": rows, "check": check, "bounds": bounds, "plain_tokens": base}


if __name__ == "__main__":
    main()
