"""What a program's potential does to one text, token by token (for figures and debugging).

:func:`token_effects` walks a given continuation through a :class:`ppl.Program` and
returns, at every position t,

* ``log_p[t] = log p(x_t | x_<t)`` under the raw LM;
* ``log_kept[t] = logsumexp_v(alpha log p(v) + log phi_t(v)) - logsumexp_v(alpha log p(v))``:
  the log of the fraction of the (tempered) model's next-token mass that the token-level
  potential keeps (0: the constraint removed nothing; -inf: it ruled out every token);
* ``log_phi[t]``: the potential's log weight of the token actually taken (0 or -inf for a
  hard constraint).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from genppl.models.interface import InputError

from .potential import scale
from .program import Program

__all__ = ["TokenEffects", "token_effects"]


@dataclasses.dataclass
class TokenEffects:
    """Per-token effects of a potential on one continuation (see the module docstring)."""

    token_ids: list
    tokens: list
    log_p: np.ndarray
    log_kept: np.ndarray
    log_phi: np.ndarray

    def figure(self, path=None):
        """Bars of log p coloured by log_kept (:func:`genppl.viz.figures.token_logprobs`)."""
        from genppl import viz

        return viz.figures.token_logprobs(self, path)


def token_effects(program: Program, token_ids) -> TokenEffects:
    """Walk ``token_ids`` (a continuation of the program's prompt) through ``program``."""
    if not isinstance(program, Program):
        raise InputError(f"token_effects needs a ppl.Program, got {type(program).__name__}")
    ids = [int(t) for t in np.asarray(token_ids).reshape(-1)]
    if not ids or len(ids) > program.max_new_tokens:
        raise InputError(f"token_ids must hold 1 to max_new_tokens={program.max_new_tokens} tokens, got {len(ids)}")

    def one(program, state, token):
        logp, target = program.next_token_weights(state)
        base = scale(program.alpha, logp)
        kept = jax.nn.logsumexp(target, -1) - jax.nn.logsumexp(base, -1)
        phi = jnp.where(jnp.isneginf(target[0, token[0]]), -jnp.inf, target[0, token[0]] - base[0, token[0]])
        state, _, _ = program.append(state, token, jnp.zeros((1,), jnp.float32), logp[0, token], ~state.done)
        return state, (logp[0, token[0]], kept[0], phi)

    step = jax.jit(one)
    state = program.init(1)
    out = []
    for t in ids:
        state, values = step(program, state, jnp.array([t], jnp.int32))
        out.append(values)
    log_p, kept, phi = (np.array([float(v[i]) for v in out]) for i in range(3))
    tok = program.lm.tokenizer
    tokens = [tok.decode([t]) if tok is not None else str(t) for t in ids]
    return TokenEffects(ids, tokens, log_p, kept, phi)
