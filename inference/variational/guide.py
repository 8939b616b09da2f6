"""The guide: a learned proposal and/or a learned twist for programs on one LM.

A :class:`Guide` turns parameters theta into

* a program with the same target pi(x) ∝ p(x)^alpha phi(x) whose LM is a
  :class:`models.GuidedLM` (the base LM plus the proposal LM's next-token logits and the
  twist's row, computed in the same forward pass) and, with a twist, whose potential is
  ``phi * Twist(psi_theta)``: the twist's increments log psi(x_<=t) - log psi(x_<t)
  telescope to 0 over every finished sequence, so it guides the intermediate targets
  pi_t(x_<=t) ∝ p(x_<=t)^alpha phi_t(x_<=t) psi_theta(x_<=t) without changing pi;
* a proposal ``(program, state, target) -> (log q [n, V], log w [n, V])`` for the kernels
  (:mod:`ppl.proposals`): with a proposal adapter, q_theta from one of the log-q functions
  below; with only a twist, the locally optimal proposal under the twisted target (twisted SMC).

The log-q functions ``log_q(program, state, target) -> [n, V]`` read the proposal LM's logits
from ``state.lm.cache["prop_logits"]``:

* :func:`tilted_target`: q_theta(v) ∝ exp(target(v) + alpha * (log p_theta(v) - log p(v))),
  where target(v) = alpha log p(v) + log phi_next(v); it starts (theta = 0) as the locally
  optimal proposal and never proposes a token a token-level constraint forbids;
* :func:`adapted_lm`: q_theta = p_theta, the adapted LM itself.

Guides and proposals are data: the parameters are pytree leaves of the program, the proposal
is a frozen dataclass compared by value, so new parameter values reuse compiled sweeps.

>>> import jax
>>> from genppl import models, ppl
>>> from genppl.inference import variational
>>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=3, max_len=2)
>>> guide = variational.Guide(twist=models.TabularTwist(lm))
>>> program = guide.program(guide.init(jax.random.key(0)), ppl.Program(lm, [1], 2))
>>> program.lm
GuidedLM(TabularLM(vocab_size=3, eos_id=0, max_len=2), twist=table)
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from genppl import ppl
from genppl.models.interface import InputError
from genppl.models.lora import GuidedLM
from genppl.ppl.program import Program

__all__ = ["Guide", "LearnedProposal", "adapted_lm", "check_program", "combine_rows", "log_normalize",
           "tilted_target", "twist_rows"]


def log_normalize(x):
    """x - logsumexp(x) over the last axis; an all -inf row stays -inf (never NaN)."""
    lse = jax.nn.logsumexp(x, -1, keepdims=True)
    return x - jnp.where(jnp.isfinite(lse), lse, 0.0)


def combine_rows(base_row, logp_row, prop_logits, alpha):
    """log q ∝ base_row + alpha * (log p_theta - log p): the adapter's change of the LM."""
    prop = jax.nn.log_softmax(prop_logits.astype(jnp.float32), -1)
    delta = jnp.where(jnp.isneginf(prop), -jnp.inf, prop - jnp.where(jnp.isneginf(logp_row), 0.0, logp_row))
    return log_normalize(base_row + jnp.asarray(alpha, jnp.float32) * delta)


def tilted_target(program, state, target):
    """log q ∝ target + alpha (log p_theta - log p): the locally optimal proposal tilted by
    the adapter (needs a GuidedLM with a proposal)."""
    logp = jax.nn.log_softmax(state.lm.logits.astype(jnp.float32), -1)
    return combine_rows(target, logp, state.lm.cache["prop_logits"], program.alpha)


def adapted_lm(program, state, target):
    """log q = log p_theta: the adapted LM itself (needs a GuidedLM with a proposal)."""
    return log_normalize(jax.nn.log_softmax(state.lm.cache["prop_logits"].astype(jnp.float32), -1))


def twist_rows(lm_state):
    """The ``ppl.Twist`` function of a guide: log psi(x_<t, .) kept in the GuidedLM's cache."""
    return lm_state.cache["twist"]


@dataclasses.dataclass(frozen=True)
class LearnedProposal:
    """A proposal from a log-q function ``log_q(program, state, target) -> [n, V]``:
    returns (log q, log w) with log w(v) = target(v) - log q(v) (-inf where q(v) = 0)."""

    log_q: Callable = tilted_target

    def __call__(self, program, state, target):
        log_q = log_normalize(jnp.asarray(self.log_q(program, state, target), jnp.float32))
        blocked = jnp.isneginf(log_q)
        return log_q, jnp.where(blocked, -jnp.inf, target - jnp.where(blocked, 0.0, log_q))


class Guide:
    """Learned proposal and/or twist for programs on one LM.

    proposal: an adapter with ``init``/``check``/``apply`` (``models.TabularAdapter``,
    ``models.LoRA``); twist: one with ``init``/``check``/``bind`` (``models.TabularTwist``,
    ``models.TwistHead``); log_q: how the proposal LM becomes q, a function
    ``(program, state, target) -> log q [n, V]`` (:func:`tilted_target`, the default, or
    :func:`adapted_lm`, or your own reading ``state.lm.cache["prop_logits"]``). With a twist
    and no proposal the kernels use the locally optimal proposal under the twisted target.

    Use :meth:`program` for the guided program and :attr:`proposal_fn` for the kernels'
    proposal, e.g. ``smc.run(guide.program(params, program), n, key, proposal=guide.proposal_fn)``.
    """

    def __init__(self, proposal=None, twist=None, log_q: Callable = tilted_target):
        if proposal is None and twist is None:
            raise InputError("a Guide needs a proposal adapter, a twist, or both")
        if not callable(log_q):
            raise InputError("log_q must be a function (program, state, target) -> log q [n, V], e.g. "
                             f"inference.variational.tilted_target or adapted_lm; got {log_q!r}")
        for name, part, verb in (("proposal", proposal, "apply"), ("twist", twist, "bind")):
            if part is not None and not all(callable(getattr(part, m, None)) for m in ("init", "check", verb)):
                raise InputError(f"the {name} must have init(key), check(params) and {verb}(params) "
                                 f"(e.g. models.{'LoRA' if name == 'proposal' else 'TwistHead'}); "
                                 f"got {type(part).__name__}")
        self.proposal, self.twist, self.log_q = proposal, twist, log_q

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
        want = sorted(k for k, part in (("proposal", self.proposal), ("twist", self.twist)) if part is not None)
        if not isinstance(params, dict) or sorted(params) != want:
            raise InputError(f"guide parameters must be a dict with keys {want}, "
                             f"got {sorted(params) if isinstance(params, dict) else type(params).__name__}")
        if self.proposal is not None:
            self.proposal.check(params["proposal"])
        if self.twist is not None:
            self.twist.check(params["twist"])

    @property
    def proposal_fn(self):
        """The kernels' proposal ``(program, state, target) -> (log q, log w)`` for programs
        from :meth:`program` (hashable: equal guides give equal proposals)."""
        if self.proposal is None:
            return ppl.proposals.locally_optimal()
        return LearnedProposal(self.log_q)

    def program(self, params, program: Program) -> Program:
        """``program`` with the learned proposal LM and/or twist plugged in (same target).
        Traceable: ``params`` and ``program`` may be traced."""
        if isinstance(program.lm, GuidedLM):
            raise InputError("this program already carries a guide: pass the program built on the base LM")
        prop = None if self.proposal is None else self.proposal.apply(params["proposal"])
        twist = None if self.twist is None else self.twist.bind(params["twist"])
        changes = {"lm": GuidedLM(program.lm, prop, twist)}
        if twist is not None:
            changes["potential"] = program.potential * ppl.Twist(twist_rows, program.lm.eos_id)
        return program.replace(**changes)

    def __repr__(self) -> str:
        name = getattr(self.log_q, "__name__", repr(self.log_q))
        return f"Guide(proposal={self.proposal!r}, twist={self.twist!r}, log_q={name})"


def check_program(program, who: str = "variational inference") -> None:
    """InputError unless ``program`` is a token-level program without host-side scorers."""
    if not isinstance(program, Program):
        raise InputError(f"{who} needs a ppl.Program, got {type(program).__name__}")
    if program.step_delimiter is not None:
        raise InputError(f"{who} works token by token: build the program without step_delimiter")
    if program.potential.on_host:
        raise InputError(f"{who} differentiates through the program: host-side scorers are not supported")
