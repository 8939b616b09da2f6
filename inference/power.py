"""Power sampling of p(x)^alpha with SMC, with rollouts, and MH rejuvenation moves inside SMC.

* :func:`power_smc` (Power-SMC): SMC whose proposal is q = softmax(alpha_t * logits) and whose
  incremental weight log sum_v p(v)^alpha_t depends only on the prefix. With a ramp, the
  exponent grows from ``alpha_start`` to ``alpha`` over the first ``ramp_tokens`` tokens; the
  intermediate target after t tokens is p(x_<=t)^alpha_t, so each step adds
  (alpha_t - alpha_{t-1}) log p(x_<t) and a particle that finishes before the ramp ends adds
  (alpha - alpha_t) log p(x): the final target stays p^alpha and log Z_hat stays unbiased.
* :func:`power_rollout`: token by token, the exact next-token law of p^alpha is
  p(v)^alpha zeta(v) / Z with zeta(v) = sum over futures of p(future | v)^alpha; zeta is
  estimated for the top-K tokens by M rollouts each (importance-weighted rollouts from the
  temperature-1/alpha proposal), with an optional jackknife correction of the O(1/M) bias of
  the normalised law.
* :class:`MHMove`: the MH kernel of :mod:`inference.mcmc` as a rejuvenation move for
  ``inference.smc(..., move=MHMove())`` (resample-move SMC). After resampling at step t the
  particles target p(x_<=t)^alpha (finished ones p(x)^alpha), which is exactly the MH target
  with stage cap t, so the move leaves the weights and the log Z estimate valid.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from genppl.models.interface import InputError, LanguageModel, check_positive_int
from genppl.models.sampling import TRACE_COUNTS, Processing
from genppl.ppl.potential import Potential
from genppl.ppl.program import Program, ProgramState

from . import mcmc
from .results import SMCResult


# ---- Power-SMC ---------------------------------------------------------------------------
@jax.tree_util.register_pytree_node_class
class PowerProgram(Program):
    """A :class:`ppl.Program` whose power ramps from ``alpha_start`` to ``alpha`` over the first
    ``ramp_tokens`` tokens (0: no ramp), reweighted so that the final target is unchanged.

    >>> import jax
    >>> from genppl import models, inference
    >>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=4, max_len=3)
    >>> program = inference.PowerProgram(lm, [1], 3, alpha=4.0, ramp_tokens=2)
    >>> [float(a) for a in program.alpha_at(jax.numpy.arange(3))]
    [2.5, 4.0, 4.0]
    """

    def __init__(self, lm: LanguageModel, prompt_ids, max_new_tokens: int, alpha: float = 4.0,
                 ramp_tokens: int = 0, alpha_start: float = 1.0, **kwargs):
        super().__init__(lm, prompt_ids, max_new_tokens, alpha=alpha, **kwargs)
        if isinstance(ramp_tokens, bool) or not isinstance(ramp_tokens, int) or ramp_tokens < 0:
            raise InputError(f"ramp_tokens must be a non-negative integer, got {ramp_tokens!r}")
        if isinstance(alpha_start, bool) or not isinstance(alpha_start, (int, float)) or not alpha_start > 0:
            raise InputError(f"alpha_start must be a positive number, got {alpha_start!r}")
        self.ramp_tokens, self.alpha_start = int(ramp_tokens), float(alpha_start)

    def tree_flatten(self):
        children, aux = super().tree_flatten()
        return children, (aux, self.ramp_tokens, self.alpha_start)

    @classmethod
    def tree_unflatten(cls, aux, children):
        inner, ramp_tokens, alpha_start = aux
        program = super().tree_unflatten(inner, children)
        program.ramp_tokens, program.alpha_start = ramp_tokens, alpha_start
        return program

    def replace(self, **changes) -> "PowerProgram":
        base = super().replace(**changes)
        program = object.__new__(type(self))
        program.__dict__.update(base.__dict__)
        program.ramp_tokens, program.alpha_start = self.ramp_tokens, self.alpha_start
        return program

    def alpha_at(self, position) -> jax.Array:
        """The power used for the token at generated position ``position`` (0-based)."""
        position = jnp.asarray(position)
        if self.ramp_tokens == 0:
            return jnp.full(position.shape, self.alpha, jnp.float32)
        frac = jnp.clip((position + 1) / self.ramp_tokens, 0.0, 1.0)
        return (self.alpha_start + (self.alpha - self.alpha_start) * frac).astype(jnp.float32)

    def next_token_weights(self, state: ProgramState):
        logp = jax.nn.log_softmax(state.lm.logits.astype(jnp.float32), -1)
        a = self.alpha_at(state.lm.num_generated)[:, None]
        target = jnp.where(jnp.isneginf(logp), -jnp.inf, a * logp)
        if self.potential.token_level:
            target = target + self.potential.logw_next(state.potential, state.lm)
        return logp, target

    def token_step(self, key, state: ProgramState, active=None):
        moving = ~state.done if active is None else (~state.done & active)
        position = state.lm.num_generated
        a_now, a_prev = self.alpha_at(position), self.alpha_at(position - 1)
        new, logw, token = super().token_step(key, state, active)
        live = moving & jnp.isfinite(logw)
        # the prefix's exponent moves from a_prev to a_now; a finished sequence jumps to alpha
        logw = logw + jnp.where(live, (a_now - a_prev) * state.log_p, 0.0)
        logw = logw + jnp.where(live & new.done, (self.alpha - a_now) * new.log_p, 0.0)
        return new, logw, token

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", ramp_tokens={self.ramp_tokens}, alpha_start={self.alpha_start:g})"


_NEUTRAL = Potential()


def power_smc(lm: LanguageModel, prompt_ids, n: int, max_new_tokens: int, key=0, *,
              alpha: float = 4.0, ramp_tokens: int = 0, alpha_start: float = 1.0,
              resampler: str = "systematic", ess_threshold: float = 0.5, move=None) -> SMCResult:
    """Power-SMC: ``n`` weighted particles targeting p(x)^alpha, and log Z_hat for
    Z = sum_x p(x)^alpha. ``move``: an optional :class:`MHMove` (resample-move; no ramp).

    >>> import jax
    >>> from genppl import models, inference
    >>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=4, max_len=3)
    >>> result = inference.power_smc(lm, [1], 16, 3, key=0, alpha=2.0)
    >>> bool(result.log_z <= 0.0)
    True
    """
    from .sequential_mc import smc

    # one shared neutral potential: the program is static jit configuration, compared by value
    program = PowerProgram(lm, prompt_ids, max_new_tokens, alpha=alpha, ramp_tokens=ramp_tokens,
                           alpha_start=alpha_start, potential=_NEUTRAL)
    result = smc(program, n, key, resampler=resampler, ess_threshold=ess_threshold,
                 **({} if move is None else {"move": move}))
    ramp = f", alpha ramped from {alpha_start:g} over {ramp_tokens} tokens" if ramp_tokens else ""
    result.method = f"Power-SMC (alpha={alpha:g}{ramp}; {result.method})" + \
        ("" if move is None else f" with {move!r}")
    return result


# ---- MH rejuvenation moves ---------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class MHMove:
    """Resample-move rejuvenation: ``num_steps`` MH moves of :mod:`inference.mcmc` applied to
    the particles right after each resampling. Targets the program's p^alpha, so the program
    must carry no potential, no stop strings, no step delimiter and no alpha ramp.

    >>> import jax
    >>> from genppl import models, inference
    >>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=4, max_len=3)
    >>> result = inference.power_smc(lm, [1], 16, 3, key=0, alpha=2.0, move=inference.MHMove(2))
    >>> bool(result.log_z <= 0.0)
    True
    """

    num_steps: int = 1
    kind: str = "suffix"
    proposal_temperature: float | None = None

    def __post_init__(self):
        check_positive_int(self.num_steps, "num_steps")
        if self.kind not in mcmc.MOVES:
            raise InputError(f"kind must be one of {mcmc.MOVES}, got {self.kind!r}")
        if self.proposal_temperature is not None:
            Processing(temperature=self.proposal_temperature)

    def check(self, program: Program) -> None:
        """Raise InputError when the move would not leave the SMC targets invariant."""
        why = []
        if type(program.potential) is not Potential:
            why.append("a potential")
        if getattr(program, "stop", None) is not None:
            why.append("stop strings")
        if program.step_delimiter is not None:
            why.append("a step delimiter")
        if getattr(program, "ramp_tokens", 0):
            why.append("an alpha ramp")
        if why:
            raise InputError(f"MHMove targets p^alpha alone, but the program has {', '.join(why)}: "
                             "remove them, or run SMC without a move")

    def config(self, program: Program) -> mcmc.MHConfig:
        proposal = None if self.proposal_temperature is None else Processing(self.proposal_temperature)
        return mcmc.MHConfig(alpha=program.alpha, proposal=proposal, move=self.kind)

    def __call__(self, key, program: Program, particles: ProgramState) -> ProgramState:
        lm, width = program.lm, program.max_new_tokens
        config = self.config(program)
        chains = mcmc.from_sequences(lm, particles.lm, particles.eos, config, width)
        # unfinished particles all hold the step count t of tokens: the stage cap
        cap = jnp.max(particles.lm.num_generated)

        def body(i, chains):
            return mcmc.step(jax.random.fold_in(key, i), chains, lm, config, cap)[0]

        chains = jax.lax.fori_loop(0, self.num_steps, body, chains)
        return particles.replace(
            lm=chains.lm,
            done=chains.eos | (chains.num_tokens >= program.max_new_tokens),
            eos=chains.eos,
            log_p=mcmc._masked_sum(chains.logp, 0, chains.num_tokens),
        )


# ---- rollout power sampling --------------------------------------------------------------
def next_token_law(key, lm: LanguageModel, lm_state, done, alpha: float, top_k: int, rollouts: int,
                   horizon: int, max_new_tokens: int, processing: Processing):
    """Estimated next-token law of p^alpha over the top-K tokens of each particle.

    Returns (candidates [n, K], log p^alpha zeta_hat [n, K] (unnormalised), the plain
    estimate of the law [n, K], the jackknife-corrected one [n, K], tokens sampled [n]). zeta_hat(v) = mean over M rollouts f ~ q of p(f | v)^alpha / q(f | v),
    rollouts of at most ``horizon`` tokens (the future beyond it is ignored).
    """
    n = lm_state.num_particles
    k, m = top_k, rollouts
    logp = jax.nn.log_softmax(lm_state.logits.astype(jnp.float32), -1)
    cand_logp, cand = jax.lax.top_k(logp, k)
    rows = jnp.repeat(jnp.arange(n), k * m)
    expanded = lm.gather(lm_state, rows)
    first = jnp.repeat(cand.reshape(-1), m)
    live = ~done[rows] & (first != lm.eos_id)
    expanded = lm.extend(expanded, first, active=live)
    stop_at = jnp.minimum(expanded.num_generated + horizon, max_new_tokens)
    width = max_new_tokens
    zeros = jnp.zeros((n * k * m, width), jnp.float32)
    start = expanded.num_generated
    out, lp, lq, _, count = mcmc._extend(lm, expanded, zeros, zeros, jnp.zeros_like(live), live, stop_at,
                                         key, processing)
    log_w = alpha * mcmc._masked_sum(lp, start, out.num_generated) - mcmc._masked_sum(lq, start, out.num_generated)
    log_w = jnp.where(live, log_w, 0.0).reshape(n, k, m)  # EOS or no room: the future is empty
    head = jnp.where(jnp.isneginf(cand_logp), -jnp.inf, alpha * cand_logp)[:, :, None]
    log_plain = head[..., 0] + jax.nn.logsumexp(log_w, -1) - jnp.log(m)
    plain = jax.nn.softmax(log_plain, -1)
    if m > 1:
        # leave one rollout index out across all candidates; pi_JK = M pi - (M-1) mean_j pi_{-j}
        others = jnp.where(jnp.eye(m, dtype=bool), -jnp.inf, log_w[..., None, :])  # [n, K, M(j), M(i)]
        rest = jax.nn.logsumexp(others, -1)  # log sum_{i != j} w_i
        loo = jax.nn.softmax(head + rest - jnp.log(m - 1), axis=1)  # [n, K, M]
        jack = jnp.maximum(m * plain - (m - 1) * loo.mean(-1), 0.0)
        mass = jack.sum(-1, keepdims=True)
        jack = jnp.where(mass > 0, jack / jnp.where(mass > 0, mass, 1.0), plain)
    else:
        jack = plain
    return cand, log_plain, plain, jack, (count + live.astype(jnp.int32)).reshape(n, k * m).sum(-1)


def _rollout_impl(lm, lm_state, key, alpha, top_k, rollouts, horizon, jackknife, processing, max_new_tokens):
    TRACE_COUNTS["power_rollout"] += 1
    n = lm_state.num_particles

    def cond(carry):
        return jnp.any(~carry[1])

    def body(carry):
        lm_state, done, eos, logp_total, cost, key = carry
        key, key_roll, key_pick = jax.random.split(key, 3)
        cand, _, plain, jack, spent = next_token_law(key_roll, lm, lm_state, done, alpha, top_k, rollouts,
                                                     horizon, max_new_tokens, processing)
        probs = jack if jackknife else plain
        choice = jax.random.categorical(key_pick, jnp.log(probs), axis=-1)
        token = jnp.take_along_axis(cand, choice[:, None], 1)[:, 0]
        logp = jax.nn.log_softmax(lm_state.logits.astype(jnp.float32), -1)
        logp_total = logp_total + jnp.where(done, 0.0, logp[jnp.arange(n), token])
        lm_state = lm.extend(lm_state, token, active=~done)
        ended = ~done & (token == lm.eos_id)
        cost = cost + jnp.where(done, 0, spent + 1)
        done = done | ended | (lm_state.num_generated >= max_new_tokens)
        return lm_state, done, eos | ended, logp_total, cost, key

    zeros = jnp.zeros((n,), bool)
    init = (lm_state, zeros, zeros, jnp.zeros((n,), jnp.float32), jnp.zeros((n,), jnp.int32), key)
    lm_state, _, eos, logp_total, cost, _ = jax.lax.while_loop(cond, body, init)
    return lm_state, eos, logp_total, cost


_rollout = jax.jit(_rollout_impl, static_argnums=(3, 4, 5, 6, 7, 8, 9))


def power_rollout(lm: LanguageModel, prompt_ids, n: int, max_new_tokens: int, key=0, *,
                  alpha: float = 4.0, top_k: int = 4, rollouts: int = 4, horizon: int | None = None,
                  jackknife: bool = True, proposal_temperature: float | None = None) -> mcmc.PowerSamples:
    """Rollout-based power sampling: each next token is drawn from the estimated law
    p(v)^alpha zeta_hat(v) over the ``top_k`` most likely tokens, zeta_hat from ``rollouts``
    rollouts per candidate of at most ``horizon`` tokens (default: to the end) drawn at
    temperature 1/alpha (or ``proposal_temperature``), jackknife-corrected by default.
    Cost: about top_k * rollouts * horizon tokens per generated token.

    >>> import jax
    >>> from genppl import models, inference
    >>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=4, max_len=3)
    >>> out = inference.power_rollout(lm, [1], 4, 3, key=0, alpha=2.0, top_k=4, rollouts=2)
    >>> len(out.texts)
    4
    """
    if not isinstance(lm, LanguageModel):
        raise InputError(f"lm must be a models.LanguageModel, got {type(lm).__name__}")
    check_positive_int(n, "n")
    check_positive_int(max_new_tokens, "max_new_tokens")
    check_positive_int(top_k, "top_k")
    check_positive_int(rollouts, "rollouts")
    if top_k > lm.vocab_size:
        raise InputError(f"top_k={top_k} exceeds the vocabulary ({lm.vocab_size} tokens): lower it")
    horizon = max_new_tokens if horizon is None else check_positive_int(horizon, "horizon")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (alpha > 0 and math.isfinite(alpha)):
        raise InputError(f"alpha must be a positive number, got {alpha!r}")
    processing = Processing(temperature=1.0 / alpha if proposal_temperature is None else proposal_temperature)
    key = jax.random.key(key) if isinstance(key, (int, np.integer)) else key
    state = lm.prefill(prompt_ids, n, max_new_tokens)
    lm_state, eos, logp, cost = _rollout(lm, state, key, float(alpha), int(top_k), int(rollouts), int(horizon),
                                         bool(jackknife), processing, int(max_new_tokens))
    tokens = lm_state.generated_ids(max_new_tokens)
    tokens, count, eos, logp, cost = (np.asarray(a) for a in jax.device_get(
        (tokens, lm_state.num_generated, eos, logp, cost)))
    decode = lm.tokenizer.decode if lm.tokenizer is not None else (lambda ids: " ".join(map(str, ids)))
    texts = [decode(list(t[:k])) for t, k in zip(tokens, count)]
    prompt = decode(list(np.asarray(prompt_ids).reshape(-1)))
    what = "jackknife" if jackknife else "plain"
    return mcmc.PowerSamples(tokens, count, eos, logp.astype(np.float64), texts, prompt,
                             method=f"rollout power sampling (alpha={alpha:g}, top-{top_k}, {rollouts} "
                                    f"rollouts of <= {horizon} tokens, {what} estimate)",
                             acceptance=np.zeros((0,)), tokens_generated=cost)
