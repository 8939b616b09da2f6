"""Variational inference: learned proposals and twists for a :class:`ppl.Program`.

A :class:`Guide` turns parameters into a program that samples from a learned proposal
q_theta and/or is guided by a learned twist psi_theta; the target pi(x) ∝ p(x)^alpha phi(x)
never changes. The proposal is q_theta(v | x_<t) ∝ exp(base(v) + alpha * (log p_theta(v) -
log p(v))), with base = the program's target increments (``base="target"``: q starts as the
locally optimal proposal and never proposes a token a token-level constraint forbids) or
``base="lm"`` (q is the adapted LM p_theta itself).

Objectives (:mod:`inference.variational_objectives`) are pure losses
``loss(params, key, program, batch) -> (loss, metrics)``; :mod:`inference.variational_train`
fits them with optax. This module holds what they share:

* :func:`rollout`: sample n sequences from a program (importance sampling, no resampling);
* :func:`trace`: teacher-force given sequences through a program and record, per step, log q
  of the token, the target increment, log q and log target of finishing (EOS), the twist;
  differentiable in the guide's parameters;
* exact answers on a :class:`models.TabularLM`: :func:`exact_batch` (the whole support with
  log pi), :func:`exact_kl` (KL(pi||q) and KL(q||pi) by enumeration);
* :func:`bounds`: lower bounds on log Z (ELBO, E[log Z_hat] of SMC), the upper bound
  E_pi[log w] from exact samples, and the KL bounds they imply.

>>> import jax
>>> from genppl import models, ppl
>>> from genppl.inference import variational as vi
>>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=3, max_len=2)
>>> program = ppl.Program(lm, [1], 2, potential=ppl.BannedTokens([2]), alpha=2.0)
>>> guide = vi.Guide(proposal=models.TabularAdapter(lm))
>>> params = guide.init(jax.random.key(0))
>>> kl_pq, kl_qp, log_z = vi.exact_kl(guide, params, program)
>>> bool(kl_pq >= 0 and kl_qp >= 0)
True
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from genppl import ppl
from genppl.models.interface import InputError, check_positive_int
from genppl.models.lora import GuidedLM
from genppl.models.tabular import TabularLM
from genppl.ppl.program import Program

from . import sequential_mc
from .resampling import ess, log_mean_exp


# ---- the learned proposal, as a Program proposal ----------------------------------------
def log_normalize(x):
    """x - logsumexp(x) over the last axis; an all -inf row stays -inf (never NaN)."""
    lse = jax.nn.logsumexp(x, -1, keepdims=True)
    return x - jnp.where(jnp.isfinite(lse), lse, 0.0)


def combine_rows(base_row, logp_row, prop_logits, alpha):
    """log q ∝ base_row + alpha * (log p_theta - log p): the adapter's change of the LM."""
    prop = jax.nn.log_softmax(prop_logits.astype(jnp.float32), -1)
    delta = jnp.where(jnp.isneginf(prop), -jnp.inf, prop - jnp.where(jnp.isneginf(logp_row), 0.0, logp_row))
    return log_normalize(base_row + alpha * delta)


def guided_target_proposal(program, state):
    """Program proposal: the locally optimal proposal, tilted by the adapter (base="target")."""
    logp, target = program.next_token_weights(state)
    return combine_rows(target, logp, state.lm.cache["prop_logits"], program.alpha)


def guided_lm_proposal(program, state):
    """Program proposal: the adapted LM itself (base="lm")."""
    return log_normalize(jax.nn.log_softmax(state.lm.cache["prop_logits"].astype(jnp.float32), -1))


def guided_twist_rows(lm_state):
    """ppl.Twist function: the learned log psi(x_<t, .) kept in the GuidedLM's cache."""
    return lm_state.cache["twist"]


class Guide:
    """Learned proposal and/or twist for programs on one LM.

    proposal: an adapter with ``init``/``check``/``apply`` (``models.TabularAdapter``,
    ``models.LoRA``); twist: one with ``init``/``check``/``bind`` (``models.TabularTwist``,
    ``models.TwistHead``). With a twist and no proposal the program uses the locally optimal
    proposal under the twisted target (twisted SMC).

    >>> import jax
    >>> from genppl import models, ppl
    >>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=3, max_len=2)
    >>> guide = Guide(twist=models.TabularTwist(lm))
    >>> program = guide.program(guide.init(jax.random.key(0)), ppl.Program(lm, [1], 2))
    >>> program.lm
    GuidedLM(TabularLM(vocab_size=3, eos_id=0, max_len=2), twist=table)
    """

    def __init__(self, proposal=None, twist=None, base: str = "target"):
        if proposal is None and twist is None:
            raise InputError("a Guide needs a proposal adapter, a twist, or both")
        if base not in ("target", "lm"):
            raise InputError(f"base must be 'target' or 'lm', got {base!r}")
        for name, part, verb in (("proposal", proposal, "apply"), ("twist", twist, "bind")):
            if part is not None and not all(callable(getattr(part, m, None)) for m in ("init", "check", verb)):
                raise InputError(f"the {name} must have init(key), check(params) and {verb}(params) "
                                 f"(e.g. models.{'LoRA' if name == 'proposal' else 'TwistHead'}); "
                                 f"got {type(part).__name__}")
        self.proposal, self.twist, self.base = proposal, twist, base

    def init(self, key):
        """Initial parameters: the learned proposal starts at its base, the twist at psi = 1."""
        kp, kt = jax.random.split(key)
        params = {}
        if self.proposal is not None:
            params["proposal"] = self.proposal.init(kp)
        if self.twist is not None:
            params["twist"] = self.twist.init(kt)
        return params

    def check(self, params):
        """InputError unless ``params`` fit this guide (names and shapes)."""
        if not isinstance(params, dict) or set(params) != set(self.init(jax.random.key(0))):
            raise InputError(f"guide parameters must be a dict with keys {sorted(self.init(jax.random.key(0)))}, "
                             f"got {sorted(params) if isinstance(params, dict) else type(params).__name__}")
        if self.proposal is not None:
            self.proposal.check(params["proposal"])
        if self.twist is not None:
            self.twist.check(params["twist"])

    def program(self, params, program: Program) -> Program:
        """``program`` with the learned proposal and/or twist plugged in (same target)."""
        base_lm = program.lm.base if isinstance(program.lm, GuidedLM) else program.lm
        prop = None if self.proposal is None else self.proposal.apply(params["proposal"])
        twist = None if self.twist is None else self.twist.bind(params["twist"])
        changes = {"lm": GuidedLM(base_lm, prop, twist)}
        if prop is not None:
            changes["proposal"] = guided_target_proposal if self.base == "target" else guided_lm_proposal
        if twist is not None:
            changes["potential"] = _twisted(program.potential, base_lm.eos_id)
        return program.replace(**changes)

    def __repr__(self) -> str:
        return f"Guide(proposal={self.proposal!r}, twist={self.twist!r}, base={self.base!r})"


_TWISTED = {}


def _twisted(potential, eos_id):
    """potential * Twist(learned rows), one object per (potential, eos): a program's potential
    is static configuration, so reusing it lets jit reuse compiled sweeps across parameters."""
    key = (id(potential), eos_id)
    if key not in _TWISTED:
        _TWISTED[key] = (potential, potential * ppl.Twist(guided_twist_rows, eos_id))  # keeps id valid
    return _TWISTED[key][1]


def check_program(program, who: str = "variational inference") -> None:
    """The token-level programs these objectives support."""
    if not isinstance(program, Program):
        raise InputError(f"{who} needs a ppl.Program, got {type(program).__name__}")
    if program.step_delimiter is not None:
        raise InputError(f"{who} works token by token: build the program without step_delimiter")
    if program.potential.on_host:
        raise InputError(f"{who} differentiates through the program: host-side scorers are not supported")


# ---- sampling and teacher forcing -------------------------------------------------------
def init_state(program, n: int):
    """``program.init(n)`` that also works under ``jax.jit`` (the prompt checks run eagerly;
    whatever depends on traced parameters is staged)."""
    with jax.ensure_compile_time_eval():
        return program.init(n)


def generated_tokens(program, state) -> jax.Array:
    """[n, max_new_tokens] generated ids, EOS-padded past each particle's end."""
    return state.lm.generated_ids(program.max_new_tokens, pad=program.lm.eos_id)


def rollout(program, key, n: int):
    """n independent samples from the program's proposal: (tokens [n, L], log w [n]), where
    log w = log pi_unnorm(x) - log q(x). Pure; call it inside jit."""
    state = init_state(program, n)

    def body(carry, k):
        state, logw = carry
        state, inc = program.step(k, state)
        return (state, logw + inc), None

    keys = jax.random.split(key, program.max_new_tokens)
    (state, logw), _ = jax.lax.scan(body, (state, jnp.zeros((n,), jnp.float32)), keys)
    return generated_tokens(program, state), logw


@struct.dataclass
class Trace:
    """Per-step records of sequences teacher-forced through a program, each [B, L].

    moving: the step extends an unfinished sequence; log_q: log q of its token;
    target: its target increment (alpha log p + potentials, twists included, plus the cap
    and end-of-sequence increments); log_q_eos / target_eos: the same for finishing there
    (EOS); twist: log psi of the prefix after the token (0 without a twist or after the end).
    ``eos`` [B]: ended with EOS; ``done`` [B]: finished.
    """

    moving: jax.Array
    log_q: jax.Array
    target: jax.Array
    log_q_eos: jax.Array
    target_eos: jax.Array
    twist: jax.Array
    eos: jax.Array
    done: jax.Array

    @property
    def log_q_total(self):
        return jnp.sum(jnp.where(self.moving, self.log_q, 0.0), -1)

    @property
    def log_target_total(self):
        return jnp.sum(jnp.where(self.moving, self.target, 0.0), -1)


def trace(program, tokens) -> Trace:
    """Teacher-force ``tokens`` [B, L] (EOS-padded) through ``program``; see :class:`Trace`.

    Differentiable in the leaves of ``program`` (the guide's parameters inside its GuidedLM).
    """
    B = tokens.shape[0]
    state = init_state(program, B)
    eos = program.lm.eos_id
    rows = jnp.arange(B)
    twisted = isinstance(program.lm, GuidedLM) and program.lm.twist is not None

    def body(state, tok):
        moving = ~state.done
        logp, target = program.next_token_weights(state)
        logq = program.proposal_log_probs(state, target)
        lq, tg = logq[rows, tok], target[rows, tok]
        new, inc, _ = program.append(state, tok, tg, logp[rows, tok], moving)
        new, inc = program._boundary(new, inc, new.done & ~state.done)
        psi = state.lm.cache["twist"][rows, tok] if twisted else jnp.zeros((B,), jnp.float32)
        psi = jnp.where(moving & ~new.done, psi, 0.0)
        out = (moving, lq, jnp.where(moving, inc, 0.0), logq[:, eos], target[:, eos], psi)
        return new, out

    state, out = jax.lax.scan(body, state, jnp.asarray(tokens, jnp.int32).T)
    out = [jnp.swapaxes(o, 0, 1) for o in out]
    return Trace(*out, eos=state.eos, done=state.done)


# ---- exact answers on tabular models -----------------------------------------------------
def _require_exact(program):
    lm = program.lm.base if isinstance(program.lm, GuidedLM) else program.lm
    if not isinstance(lm, TabularLM):
        raise InputError("exact samples need a model whose sequences can be enumerated (models.TabularLM); "
                         f"this program's LM is {type(lm).__name__}: use SMC samples instead "
                         "(source='smc')")
    if program.max_new_tokens > lm.max_len:
        raise InputError(f"max_new_tokens={program.max_new_tokens} exceeds the table's max_len={lm.max_len}")
    if program.stop is not None:
        raise InputError("exact enumeration does not support stop strings")
    return lm


_trace_jit = jax.jit(trace)


def exact_batch(program) -> dict:
    """The program's whole support: {"tokens": [S, L], "log_weights": log pi(x) [S]} (float32),
    with -inf for sequences the target rules out. Needs a :class:`models.TabularLM`."""
    lm = _require_exact(program)
    check_program(program, "exact enumeration")
    seqs, _ = lm.enumerate(program.max_new_tokens)
    L = program.max_new_tokens
    tokens = np.full((len(seqs), L), lm.eos_id, np.int32)
    for i, s in enumerate(seqs):
        tokens[i, :len(s)] = s
    base = program.replace(proposal="prior", lm=lm)
    logt = np.asarray(_trace_jit(base, jnp.asarray(tokens)).log_target_total, np.float64)
    log_z = np.logaddexp.reduce(logt)
    if not np.isfinite(log_z):
        raise InputError("the target rules out every sequence (Z = 0): loosen the constraints")
    return {"tokens": jnp.asarray(tokens), "log_weights": jnp.asarray(logt - log_z, jnp.float32),
            "log_z": float(log_z)}


def exact_kl(guide: Guide, params, program, batch=None):
    """(KL(pi||q), KL(q||pi), log Z) by enumeration (sums in float64 on the host; log q from
    a float32 pass). KL(q||pi) is inf when q puts mass (above 1e-4) outside pi's support."""
    batch = exact_batch(program) if batch is None else batch
    tr = _trace_jit(guide.program(params, program), batch["tokens"])
    logq = np.asarray(tr.log_q_total, np.float64)
    logpi = np.asarray(batch["log_weights"], np.float64)
    inside = np.isfinite(logpi)  # log q is exact there (a ruled-out sequence stops at its -inf token)
    q, pi = np.exp(np.where(inside, logq, -np.inf)), np.exp(logpi)
    if q.sum() > 1.0 + 1e-4:
        raise AssertionError(f"q sums to {q.sum()} > 1 over the target's support: the enumeration is wrong")
    with np.errstate(invalid="ignore", divide="ignore"):
        kl_pq = float(np.sum(np.where(pi > 0, pi * (logpi - logq), 0.0)))
        kl_qp = float(np.sum(np.where(q > 0, q * (logq - logpi), 0.0)))
    if q.sum() < 1.0 - 1e-4:  # q puts mass on sequences the target rules out (float32 resolution)
        kl_qp = math.inf
    return kl_pq, kl_qp, batch["log_z"]


# ---- bounds ------------------------------------------------------------------------------
_SMC_MANY = {}


def smc_log_z(program, key, n: int, runs: int, ess_threshold: float = 0.5):
    """log Z_hat [runs] and final ESS / n [runs] of ``runs`` independent SMC sweeps (one jit)."""
    key = jax.random.key(key) if isinstance(key, (int, np.integer)) else key
    thr = float(ess_threshold)
    if thr not in _SMC_MANY:
        def many(program, state, keys):
            one = lambda k: sequential_mc._sweep_impl(program, state, k, "systematic", thr, "resample")  # noqa: E731
            out = jax.vmap(one)(keys)
            return jax.vmap(log_mean_exp)(out.logw), jax.vmap(ess)(out.logw) / state.logw.shape[0]
        _SMC_MANY[thr] = jax.jit(many)
    state = sequential_mc.init(program, n)
    log_z, final_ess = _SMC_MANY[thr](program.replace(prompt_ids=(0,)), state, jax.random.split(key, runs))
    return np.asarray(log_z, np.float64), np.asarray(final_ess, np.float64)


def bounds(guide: Guide, params, program, key, n: int = 64, runs: int = 16, exact=None) -> dict:
    """Bounds on log Z and on the KL divergences between q and pi.

    * ``elbo``: E_q[log w] <= log Z (n importance samples from q);
    * ``smc_lower``: mean over ``runs`` of log Z_hat of SMC with the learned guide and n
      particles (E[log Z_hat] <= log Z), with its standard error ``smc_lower_se``;
    * ``eubo``: E_pi[log w] >= log Z, from exact samples (``exact``: a batch from
      :func:`exact_batch`, used as an exact expectation); None where they do not exist;
    * ``kl_q_pi <= eubo - elbo`` and ``kl_pi_q <= eubo - max(elbo, smc_lower)``.
    Also ``ess``: mean final ESS / n of the SMC runs, and ``log_z_var``: Var(log Z_hat).
    """
    check_positive_int(n, "n")
    check_positive_int(runs, "runs")
    key = jax.random.key(key) if isinstance(key, (int, np.integer)) else key
    k1, k2 = jax.random.split(key)
    guided = guide.program(params, program)
    logw = np.asarray(_rollout_jit(guided, k1, n)[1], np.float64)
    log_z, final_ess = smc_log_z(guided, k2, n, runs)
    out = {"elbo": float(np.mean(logw)) if np.all(np.isfinite(logw)) else -math.inf,
           "smc_lower": float(np.mean(log_z)), "smc_lower_se": float(np.std(log_z, ddof=1) / np.sqrt(runs)),
           "log_z_var": float(np.var(log_z, ddof=1)), "ess": float(np.mean(final_ess)), "eubo": None}
    if exact is not None:
        tr = _trace_jit(guided, exact["tokens"])
        logw_pi = np.asarray(tr.log_target_total - tr.log_q_total, np.float64)
        pi = np.exp(np.asarray(exact["log_weights"], np.float64))
        with np.errstate(invalid="ignore"):
            out["eubo"] = float(np.sum(np.where(pi > 0, pi * logw_pi, 0.0)))
        out["kl_q_pi"] = out["eubo"] - out["elbo"]
        out["kl_pi_q"] = out["eubo"] - max(out["elbo"], out["smc_lower"])
    return out


_rollout_jit = jax.jit(rollout, static_argnums=2)

__all__ = ["Guide", "Trace", "bounds", "check_program", "combine_rows", "exact_batch", "exact_kl",
           "generated_tokens", "guided_lm_proposal", "guided_target_proposal", "guided_twist_rows",
           "init_state", "log_normalize", "rollout", "smc_log_z", "trace"]
