"""Power-SMC: SMC for pi(x) ∝ p(x)^alpha, with an optional alpha ramp.

With the locally optimal proposal q_t(v) ∝ p(v | x_<t)^alpha_t (= softmax(alpha_t * logits))
the incremental log-weight log sum_v p(v | x_<t)^alpha_t depends only on the prefix, so the
particles can be resampled before the token is drawn.

Alpha ramp (``ramp_tokens`` = R > 0): the exponent of the token at generated position t
(0-based) is alpha_t = alpha_start + (alpha - alpha_start) * min(1, (t + 1) / R), reaching
alpha at t = R - 1. The intermediate target after t tokens is p(x_<=t)^alpha_t for an
unfinished prefix and p(x)^alpha for a finished sequence, so each step adds

    (alpha_t - alpha_{t-1}) log p(x_<t)                 (the prefix's exponent moves)
    + log sum_v p(v | x_<t)^alpha_t                     (the proposal's normaliser)
    + (alpha - alpha_t) log p(x)   if the step finishes the sequence,

and the final target and the log Z_hat estimate of Z = sum_x p(x)^alpha are unchanged.
Alpha, alpha_start and the ramp length are data (pytree leaves): programs that differ only in
them share one compiled sweep.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp

from genppl.models.batch import is_prompt_batch
from genppl.models.interface import InputError, LanguageModel
from genppl.ppl.potential import scale
from genppl.ppl.program import Program, ProgramState
from genppl.ppl.proposals import locally_optimal

from .. import smc
from ..mcmc.kernel import check_alpha

__all__ = ["PowerProgram", "power_smc"]


class PowerProgram(Program):
    """A :class:`ppl.Program` targeting p^alpha (times its potential) whose power ramps from
    ``alpha_start`` to ``alpha`` over the first ``ramp_tokens`` tokens (0: no ramp),
    reweighted so that the final target is unchanged.

    >>> import jax
    >>> from genppl import models
    >>> from genppl.inference import power
    >>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=4, max_len=3)
    >>> program = power.PowerProgram(lm, [1], 3, alpha=4.0, ramp_tokens=2)
    >>> [float(a) for a in program.alpha_at(jax.numpy.arange(3))]
    [2.5, 4.0, 4.0]
    """

    data_fields = Program.data_fields + ("alpha_start", "ramp_tokens")

    def __init__(self, lm: LanguageModel, prompt_ids, max_new_tokens: int, alpha: float = 4.0,
                 ramp_tokens: int = 0, alpha_start: float = 1.0, **kwargs):
        check_alpha(alpha)
        super().__init__(lm, prompt_ids, max_new_tokens, alpha=alpha, **kwargs)
        if isinstance(ramp_tokens, bool) or not isinstance(ramp_tokens, numbers.Integral) or ramp_tokens < 0:
            raise InputError(f"ramp_tokens must be a non-negative integer, got {ramp_tokens!r} (0: no ramp)")
        check_alpha(alpha_start, "alpha_start")
        self.ramp_tokens = jnp.asarray(int(ramp_tokens), jnp.int32)
        self.alpha_start = jnp.asarray(float(alpha_start), jnp.float32)

    def alpha_at(self, position) -> jax.Array:
        """The power used for the token at generated position ``position`` (0-based)."""
        position = jnp.asarray(position)
        ramp = self.ramp_tokens
        frac = jnp.clip((position + 1) / jnp.maximum(ramp, 1), 0.0, 1.0)
        ramped = self.alpha_start + (self.alpha - self.alpha_start) * frac
        return jnp.where(ramp > 0, ramped, self.alpha).astype(jnp.float32)

    def next_token_weights(self, state: ProgramState):
        logp = jax.nn.log_softmax(state.lm.logits.astype(jnp.float32), -1)
        target = scale(self.alpha_at(state.lm.num_generated)[:, None], logp)
        if self.potential.token_level:
            target = target + self.potential.logw_next(state.potential, state.lm)
        return logp, target

    def token_step(self, key, state: ProgramState, proposal, active=None):
        moving = ~state.done if active is None else (~state.done & active)
        position = state.lm.num_generated
        a_now, a_prev = self.alpha_at(position), self.alpha_at(position - 1)
        new, logw, token = super().token_step(key, state, proposal, active)
        live = moving & jnp.isfinite(logw)
        # the prefix's exponent moves from a_prev to a_now; a finished sequence jumps to alpha
        logw = logw + jnp.where(live, (a_now - a_prev) * state.log_p, 0.0)
        logw = logw + jnp.where(live & new.done, (self.alpha - a_now) * new.log_p, 0.0)
        return new, logw, token

    def __repr__(self) -> str:
        try:
            ramp = f", ramp_tokens={int(self.ramp_tokens)}, alpha_start={float(self.alpha_start):g})"
        except Exception:  # traced
            ramp = ", ramp traced)"
        return super().__repr__()[:-1] + ramp


def power_smc(lm: LanguageModel, prompt_ids, n: int, max_new_tokens: int, key=0, *,
              alpha: float = 4.0, ramp_tokens: int = 0, alpha_start: float = 1.0,
              resampling_fn=smc.systematic, ess_threshold: float = 0.5, move=None, mesh=None,
              resampling: str = "global") -> smc.SMCResult:
    """Power-SMC: ``n`` weighted particles targeting p(x)^alpha, and log Z_hat for
    Z = sum_x p(x)^alpha (see the module docstring for the weights and the ramp).

    resampling_fn: ``(key, logw, n) -> ancestors`` (default ``smc.systematic``);
    ess_threshold: resample when ESS < ess_threshold * n; move: an optional rejuvenation move
    applied after each resampling, e.g. ``inference.mcmc.rejuvenation()`` (no ramp then).
    ``prompt_ids`` may be a batch of prompts (a list of id lists): one compiled run, a
    :class:`models.batch.Batch` of results, prompt b with key ``jax.random.split(key, B)[b]``
    (see :func:`inference.smc.run`). ``mesh`` and ``resampling`` ("global" or "island"): many
    devices, as in :func:`inference.smc.run`.

    >>> import jax
    >>> from genppl import models
    >>> from genppl.inference import power
    >>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=4, max_len=3)
    >>> result = power.power_smc(lm, [1], 16, 3, key=0, alpha=2.0)
    >>> bool(result.log_z <= 0.0)
    True
    """
    def program(prompt):
        return PowerProgram(lm, prompt, max_new_tokens, alpha=alpha, ramp_tokens=ramp_tokens, alpha_start=alpha_start)

    batch = is_prompt_batch(prompt_ids)
    program = [program(p) for p in prompt_ids] if batch else program(prompt_ids)
    result = smc.run(program, n, key, resampling_fn=resampling_fn, proposal=locally_optimal(),
                     ess_threshold=ess_threshold, move=move, mesh=mesh, resampling=resampling)
    ramp = f", alpha ramped from {alpha_start:g} over {ramp_tokens} tokens" if ramp_tokens else ""
    for one in (result if batch else [result]):
        one.method = f"Power-SMC (alpha={alpha:g}{ramp}; {one.method})"
    return result
