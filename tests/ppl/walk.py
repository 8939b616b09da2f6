"""Drive a potential along given token sequences, the way ppl.Program does, and sum its
increments (tests of the telescoping property: the sum must equal log phi(x))."""

import jax
import jax.numpy as jnp
import numpy as np

from genppl.ppl import where_rows


def walk(potential, lm, seqs, prompt, cap, every_token_boundary=False, record=None):
    """Sum of a potential's increments along each sequence (all sequences at once).

    Each sequence ends with EOS or has ``cap`` tokens. Per token: ``logw_next`` at the token
    (token-level potentials), ``update``, ``logw_cap`` when cut at the cap, then
    ``logw_boundary`` for particles at a boundary: only finished ones, or with
    ``every_token_boundary`` every moving one (as if every token ended a step).
    ``record``: a list that receives (logw_next [n, V], active [n]) at every token.
    Returns float64 [len(seqs)].
    """
    n = len(seqs)
    longest = max(len(s) for s in seqs)
    padded = np.full((n, longest), lm.eos_id, np.int32)
    lengths = np.array([len(s) for s in seqs])
    for i, s in enumerate(seqs):
        padded[i, : len(s)] = s
    state = lm.prefill(prompt, n, cap)
    pstate = potential.init(state)
    rows = jnp.arange(n)

    @jax.jit  # one compiled token step per walk (eager op-by-op dispatch is slow to warm up)
    def advance(pstate, state, tok, active, last):
        inc = jnp.zeros((n,), jnp.float32)
        logw = jnp.zeros(state.logits.shape, jnp.float32)
        if potential.token_level:
            logw = potential.logw_next(pstate, state)
            inc = inc + logw[rows, tok]
        state = lm.extend(state, tok, active=active)
        pstate = where_rows(active, potential.update(pstate, state, tok), pstate)
        is_eos = active & (tok == lm.eos_id)
        at_cap = active & ~is_eos & last
        inc = inc + jnp.where(at_cap, potential.logw_cap(pstate, state), 0.0)
        final = is_eos | at_cap
        at_boundary = active if every_token_boundary else final
        pstate, w = potential.logw_boundary(pstate, state, at_boundary, final)
        inc = inc + jnp.where(at_boundary, w, 0.0)
        return pstate, state, inc, logw

    total = np.zeros(n)
    for t in range(longest):
        active = t < lengths
        pstate, state, inc, logw = advance(pstate, state, jnp.asarray(padded[:, t]),
                                           jnp.asarray(active), jnp.asarray(t + 1 >= cap))
        if record is not None:
            record.append((np.asarray(logw), active))
        total = total + np.where(active, np.asarray(inc, np.float64), 0.0)
    return total
