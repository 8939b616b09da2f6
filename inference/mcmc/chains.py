"""Running several MCMC chains over a :class:`ppl.Program` — particle Gibbs / PGAS
(:mod:`inference.smc.conditional`) or MH over any program (:mod:`.program`) — with their
convergence diagnostics, returned with SMC's results interface.

The chains start at sequences drawn by weight from one SMC run (any sequence with positive
target is a valid start; the draws only shorten the burn-in). One compiled program runs
``num_iterations`` iterations of every chain (``lax.scan`` over iterations, ``vmap`` over
chains). The result holds the chains' final sequences as equally weighted particles, every
iteration's sequences (``draws``), and split R-hat / bulk and tail ESS of the traces of
log p(x) and of the length (:mod:`.diagnostics`), the acceptance rate (MH: accepted moves;
particle Gibbs: iterations whose sequence changed) and the LM transitions spent.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from genppl import distributed
from genppl.models.interface import InputError, as_key, check_positive_int
from genppl.ppl.program import Program

from ..smc.bounds import draw_references
from ..smc.conditional import ParticleGibbs, PGState
from ..smc.replay import force
from ..smc.results import SMCResult
from . import diagnostics
from .program import ProgramMH

__all__ = ["ChainResult", "run_chains"]


@dataclasses.dataclass(repr=False)
class ChainResult(SMCResult):
    """Final states of ``num_chains`` chains (equal weights) plus: ``draws`` [iterations][chains]
    token-id tuples, ``trace_log_p`` / ``trace_length`` [chains, iterations], ``accepted``
    [iterations, chains], ``tokens`` (LM transitions spent), ``chain_diagnostics`` (dict)."""

    draws: list | None = None
    trace_log_p: np.ndarray | None = None
    trace_length: np.ndarray | None = None
    accepted: np.ndarray | None = None
    tokens: int = 0
    chain_diagnostics: dict | None = None

    def samples(self, burn_in: int = 0) -> list[tuple[int, ...]]:
        """Every chain's sequence at every iteration from ``burn_in`` on (chain-major)."""
        return [d for it in self.draws[burn_in:] for d in it]

    def __repr__(self) -> str:
        d = self.chain_diagnostics or {}
        return (f"<ChainResult {self.method}: {self.num_particles} chains x {len(self.draws or [])} iterations, "
                f"acceptance {d.get('acceptance', math.nan):.3f}, R-hat(log p) {d.get('rhat', math.nan):.3f}, "
                f"bulk ESS {d.get('ess_bulk', math.nan):.1f}, tail ESS {d.get('ess_tail', math.nan):.1f}, "
                f"{self.tokens} tokens>")


def iterate(kernel, program, state, keys):
    """``keys`` [iterations, chains]: scan over iterations, vmap over chains. Traceable."""
    width = program.max_new_tokens
    if isinstance(kernel, ParticleGibbs):
        def body(state, ks):
            new, info = jax.vmap(lambda k, s: kernel(k, s, program))(ks, state)
            return new, (new.reference, new.length, info.log_p, info.changed, info.tokens)
    else:
        def body(state, ks):
            # chains are rows of one ProgramState: one kernel call moves them all
            new, info = kernel(ks[0], state, program)
            ids, length = new.lm.generated_ids(width), new.lm.num_generated
            return new, (ids, length, new.log_p, info.accepted, jnp.broadcast_to(info.proposed_tokens, length.shape))
    return jax.lax.scan(body, state, keys)


iterate_jit = jax.jit(iterate, static_argnums=0)


def run_chains(program: Program, kernel, num_chains: int, num_iterations: int, key=0, *,
               init_particles: int = 64, mesh=None) -> ChainResult:
    """Run ``num_chains`` chains of ``kernel`` (:func:`inference.smc.conditional.particle_gibbs`
    or :func:`program_mh`) for ``num_iterations`` iterations on ``program``.

    ``mesh`` (what :func:`genppl.distributed.as_mesh` takes): the chains split over the mesh's
    data axis (``num_chains`` a multiple of its size), the weights replicated; the same chains
    as on one device (the initial references are drawn on one device).

    >>> import jax
    >>> from genppl import models, ppl
    >>> from genppl.inference import mcmc, smc
    >>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=4, max_len=3)
    >>> program = ppl.Program(lm, [1], 3, alpha=2.0)
    >>> out = mcmc.run_chains(program, smc.conditional.particle_gibbs(4), 2, 8)
    >>> len(out.samples(burn_in=4))
    8
    """
    if not isinstance(program, Program):
        raise InputError(f"run_chains needs a ppl.Program, got {type(program).__name__}")
    if not isinstance(kernel, (ParticleGibbs, ProgramMH)):
        raise InputError("kernel must be smc.conditional.particle_gibbs(...) or mcmc.program_mh(...), "
                         f"got {kernel!r}")
    check_positive_int(num_chains, "num_chains")
    check_positive_int(num_iterations, "num_iterations")
    k_init, k_run = jax.random.split(as_key(key))
    ids, lengths = draw_references(program, num_chains, k_init, init_particles)
    state = PGState(ids, lengths) if isinstance(kernel, ParticleGibbs) else force(program, ids, lengths)
    keys = jax.random.split(k_run, (num_iterations, num_chains))
    mesh, lm, state, _ = distributed.spread(mesh, program.lm, num_chains, state)
    with distributed.on(mesh):
        final, out = iterate_jit(kernel, program.replace(lm=lm), state, keys)
    if distributed.spans_processes(mesh):  # other processes hold some chains: gather them
        out = distributed.to_host(out)
    refs, lens, log_p, accepted, tokens = out
    refs, lens = np.asarray(refs), np.asarray(lens)
    draws = [[tuple(int(t) for t in refs[i, c, :lens[i, c]]) for c in range(num_chains)]
             for i in range(num_iterations)]
    last = [list(d) for d in draws[-1]]
    tokenizer = program.lm.tokenizer
    texts = [tokenizer.decode(r) for r in last] if tokenizer is not None else [""] * num_chains
    if tokenizer is not None and program.stop is not None:
        texts = [program.stop.cut(t) for t in texts]
    log_p = np.asarray(log_p, np.float64).T  # [chains, iterations]
    length = lens.T.astype(np.float64)
    accepted = np.asarray(accepted, bool)
    spent = np.asarray(tokens)
    spent = int(spent.sum()) if isinstance(kernel, ParticleGibbs) else int(spent[:, 0].sum())
    summary = diagnostics.chain_summary(log_p)
    summary = {**summary, "acceptance": diagnostics.acceptance_rate(accepted),
               "rhat_length": diagnostics.chain_summary(length)["rhat"]}
    eos = np.array([bool(d) and d[-1] == program.lm.eos_id for d in draws[-1]])
    what = (f"particle Gibbs{' with ancestor sampling' if kernel.conditional.ancestor_sampling else ''} "
            f"({kernel.num_particles} particles)") if isinstance(kernel, ParticleGibbs) else \
        f"MH over the program ({type(kernel.move).__name__} move, {type(kernel.proposal).__name__} proposal)"
    return ChainResult(last, texts, np.zeros(num_chains), math.nan, np.zeros(0), np.zeros(0, bool), eos,
                       log_p[:, -1].copy(), method=what, draws=draws, trace_log_p=log_p, trace_length=length,
                       accepted=accepted, tokens=spent, chain_diagnostics=summary)
