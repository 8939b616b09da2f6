"""Programs: the state-space model that inference kernels run.

A :class:`Program` is an LM, a prompt, a potential, a power ``alpha``, a proposal, a step
boundary and a length cap. Its target over finished continuations is

    pi(x) ∝ p(x | prompt)^alpha * phi(x).

Kernels only call :meth:`Program.init`, :meth:`Program.step` (or :meth:`token_step`) and
read :class:`ProgramState`; they never reach into the LM. Every transition returns the
incremental log-weight of the standard Feynman–Kac construction (ALGORITHMS.md):

    log G = alpha * log p(v) + logw_next(v) - log q(v)        (bootstrap / custom q)
    log G = log sum_v p(v)^alpha exp(logw_next(v))            (locally optimal q)

so that, summed over a finished sequence, the log-weights equal log pi_unnorm(x) - log q(x).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from models.interface import InputError, LanguageModel, LMState, check_positive_int
from models.sampling import Processing, process_logits

from .potential import Potential, scale


@struct.dataclass
class ProgramState:
    """Particles of a program. Every leaf leads with the particle axis.

    lm: the LM state; potential: the potential's state; done: finished (EOS, cap, or dead);
    eos: ended with EOS; log_p: log p(x | prompt) so far under the raw LM.
    """

    lm: LMState
    potential: object
    done: jax.Array
    eos: jax.Array
    log_p: jax.Array

    @property
    def num_particles(self) -> int:
        return self.done.shape[0]


#: proposal(program, state) -> log q [n, V] over next tokens (e.g. a learned proposal)
ProposalFn = Callable[["Program", ProgramState], jax.Array]


@jax.tree_util.register_pytree_node_class
class Program:
    """Target pi(x) ∝ p(x)^alpha phi(x) over continuations of ``prompt_ids``.

    proposal: ``"optimal"`` (q ∝ p^alpha * token-level phi; needs a token-level potential or
    alpha != 1 to differ from the prior), ``"prior"`` (the LM itself), a
    :class:`models.Processing` (tempered / truncated LM, importance-corrected), or a function
    ``(program, state) -> log q [n, V]``.
    step_delimiter: a string; a step ends after a token whose bytes contain it (or at EOS or
    the cap). None: every token is a step.

    >>> import jax, models, ppl
    >>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=4, max_len=3)
    >>> program = ppl.Program(lm, [1], max_new_tokens=3, potential=ppl.BannedTokens([2]))
    >>> state = program.init(8)
    >>> state, logw = program.step(jax.random.key(1), state)
    >>> logw.shape
    (8,)
    """

    def __init__(self, lm: LanguageModel, prompt_ids, max_new_tokens: int,
                 potential: Potential | None = None, alpha: float = 1.0,
                 proposal="optimal", step_delimiter: str | None = None):
        if not isinstance(lm, LanguageModel):
            raise InputError(f"lm must be a models.LanguageModel, got {type(lm).__name__}")
        check_positive_int(max_new_tokens, "max_new_tokens")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
            raise InputError(f"alpha must be a positive number, got {alpha!r}")
        if potential is None:
            potential = Potential()
        if not isinstance(potential, Potential):
            raise InputError(f"potential must be a ppl.Potential, got {type(potential).__name__}")
        if not (proposal in ("optimal", "prior") or isinstance(proposal, Processing) or callable(proposal)):
            raise InputError("proposal must be 'optimal', 'prior', a models.Processing, "
                             f"or a function (program, state) -> log q; got {proposal!r}")
        self.lm = lm
        self.prompt_ids = tuple(int(t) for t in np.asarray(prompt_ids).reshape(-1)) \
            if not isinstance(prompt_ids, str) else prompt_ids
        self.max_new_tokens = int(max_new_tokens)
        self.potential = potential
        self.alpha = float(alpha)
        self.proposal = proposal
        self.step_delimiter = step_delimiter
        if step_delimiter is not None and (not isinstance(step_delimiter, str) or not step_delimiter):
            raise InputError("step_delimiter must be a non-empty string, e.g. '\\n'")

    # the LM is the only traced leaf; everything else is static configuration
    def tree_flatten(self):
        aux = (self.prompt_ids, self.max_new_tokens, self.potential, self.alpha, self.proposal,
               self.step_delimiter)
        return (self.lm,), aux

    @classmethod
    def tree_unflatten(cls, aux, children):
        program = object.__new__(cls)
        (program.prompt_ids, program.max_new_tokens, program.potential, program.alpha,
         program.proposal, program.step_delimiter) = aux
        program.lm = children[0]
        return program

    def replace(self, **changes) -> "Program":
        fields = dict(lm=self.lm, prompt_ids=self.prompt_ids, max_new_tokens=self.max_new_tokens,
                      potential=self.potential, alpha=self.alpha, proposal=self.proposal,
                      step_delimiter=self.step_delimiter)
        fields.update(changes)
        return Program(**fields)

    # ---- transitions --------------------------------------------------------------------
    def init(self, n: int) -> ProgramState:
        """n particles at the prompt (its cache computed once and shared)."""
        lm_state = self.lm.prefill(self.prompt_ids, n, self.max_new_tokens)
        return ProgramState(
            lm=lm_state,
            potential=self.potential.init(lm_state),
            done=jnp.zeros((n,), bool),
            eos=jnp.zeros((n,), bool),
            log_p=jnp.zeros((n,), jnp.float32),
        )

    def next_token_weights(self, state: ProgramState) -> tuple[jax.Array, jax.Array]:
        """(log p [n, V] raw LM, log target increments alpha*log p + token-level phi [n, V])."""
        logp = jax.nn.log_softmax(state.lm.logits.astype(jnp.float32), -1)
        target = scale(self.alpha, logp) if self.alpha != 1.0 else logp
        if self.potential.token_level:
            target = target + self.potential.logw_next(state.potential, state.lm)
        return logp, target

    def proposal_log_probs(self, state: ProgramState, target: jax.Array) -> jax.Array:
        """log q [n, V] of the configured proposal (rows may be all -inf for dead particles)."""
        if self.proposal == "optimal":
            return target - jax.nn.logsumexp(target, -1, keepdims=True)
        if self.proposal == "prior":
            return jax.nn.log_softmax(state.lm.logits.astype(jnp.float32), -1)
        if isinstance(self.proposal, Processing):
            return process_logits(state.lm.logits, self.proposal)
        return self.proposal(self, state)

    def token_step(self, key, state: ProgramState, active=None):
        """Extend every active, unfinished particle by one token.

        Returns (state, log G [n], token [n]); finished or inactive particles get log G = 0.
        A particle whose every continuation is ruled out gets log G = -inf and finishes.
        """
        moving = ~state.done if active is None else (~state.done & active)
        logp, target = self.next_token_weights(state)
        logq = self.proposal_log_probs(state, target)
        alive = jnp.isfinite(jax.nn.logsumexp(logq, -1))
        token = jax.random.categorical(key, jnp.where(alive[:, None], logq, 0.0), axis=-1).astype(jnp.int32)
        token = jnp.where(alive, token, self.lm.eos_id)
        rows = jnp.arange(token.shape[0])
        if self.proposal == "optimal":
            logw = jax.nn.logsumexp(target, -1)  # = target[v] - log q[v] for every v
        else:
            logw = target[rows, token] - logq[rows, token]
        logw = jnp.where(alive, logw, -jnp.inf)
        log_p_token = jnp.where(alive, logp[jnp.arange(token.shape[0]), token], 0.0)
        return self.append(state, token, logw, log_p_token, moving)

    def append(self, state: ProgramState, token, logw, log_p_token, moving):
        """Append a chosen ``token`` [n] to the ``moving`` particles and finish the bookkeeping
        of a transition whose proposal weight is ``logw`` [n] (the cap increment is added;
        a -inf weight kills the particle). Returns (state, log G [n], token)."""
        lm_state = self.lm.extend(state.lm, token, active=moving)
        pstate = self.potential.update(state.potential, lm_state, token)
        pstate = _where_rows(moving, pstate, state.potential)
        alive = jnp.isfinite(logw)
        is_eos = moving & (token == self.lm.eos_id) & alive
        at_cap = moving & ~is_eos & (lm_state.num_generated >= self.max_new_tokens)
        logw = logw + jnp.where(at_cap, self.potential.logw_cap(pstate, lm_state), 0.0)
        logw = jnp.where(moving, logw, 0.0)
        new = ProgramState(
            lm=lm_state,
            potential=pstate,
            done=state.done | (moving & (is_eos | at_cap | ~jnp.isfinite(logw))),
            eos=state.eos | is_eos,
            log_p=state.log_p + jnp.where(moving & alive, log_p_token, 0.0),
        )
        return new, logw, token

    def delimiter_mask(self) -> np.ndarray:
        """[V] bool: tokens that end a step (their bytes contain the delimiter)."""
        if self.step_delimiter is None:
            return np.zeros((self.lm.vocab_size,), bool)
        needle = self.step_delimiter.encode()
        return np.array([needle in b for b in self.lm.tokenizer.token_bytes], bool)

    def step(self, key, state: ProgramState):
        """One transition: a token, or with a step delimiter, tokens up to the next boundary.

        Sequence-level potentials are added at the boundary. Returns (state, log G [n]).
        """
        start = state.done
        if self.step_delimiter is None:
            state, logw, _ = self.token_step(key, state)
            return self._boundary(state, logw, state.done & ~start)
        ends_step = jnp.asarray(self.delimiter_mask())

        def cond(carry):
            state, _, reached, _ = carry
            return jnp.any(~state.done & ~reached)

        def body(carry):
            state, logw, reached, key = carry
            key, sub = jax.random.split(key)
            state, inc, token = self.token_step(sub, state, active=~reached)
            return state, logw + inc, reached | ends_step[token] & ~state.done, key

        state, logw, reached, _ = jax.lax.while_loop(
            cond, body, (state, jnp.zeros(state.done.shape, jnp.float32), jnp.zeros_like(state.done), key))
        return self._boundary(state, logw, ~start)

    def _boundary(self, state, logw, at_boundary):
        """Add sequence-level increments for particles at a boundary (dead ones skipped)."""
        if not _has_boundary(self.potential):
            return state, logw
        at_boundary = at_boundary & jnp.isfinite(logw)
        pstate, inc = self.potential.logw_boundary(state.potential, state.lm, at_boundary, state.done)
        return state.replace(potential=pstate), logw + jnp.where(at_boundary, inc, 0.0)

    def finished_text(self, state: ProgramState) -> list[str]:
        """Host-side decoded continuations."""
        return [self.lm.tokenizer.decode(ids) for ids in state.lm.generated()]

    def __repr__(self) -> str:
        return (f"Program(lm={self.lm!r}, prompt={len(self.prompt_ids)} tokens, "
                f"max_new_tokens={self.max_new_tokens}, alpha={self.alpha:g}, "
                f"potential={self.potential!r}, proposal={self.proposal!r})")


def _has_boundary(potential: Potential) -> bool:
    """Whether any factor overrides the sequence-level hook (skip it otherwise)."""
    from .potential import Power, Product

    if isinstance(potential, Product):
        return any(_has_boundary(f) for f in potential.factors)
    if isinstance(potential, Power):
        return _has_boundary(potential.base)
    return type(potential).logw_boundary is not Potential.logw_boundary


def _where_rows(mask, new, old):
    def pick(a, b):
        m = mask.reshape(mask.shape + (1,) * (a.ndim - 1))
        return jnp.where(m, a, b)

    return jax.tree.map(pick, new, old)
