"""Scores of whole (or partial) sequences and token-level twists.

Sequence-level scorers add their log phi at step boundaries (see :class:`ppl.Program`):

* :class:`SequenceScorer`: ``fn(tokens, length, prompt_length) -> log phi [n]``, a JAX function.
* :class:`HostScorer`: ``fn(list[str]) -> list[float]`` (or one text at a time), ordinary
  Python run on the host through ``jax.pure_callback`` (a verifier, a reward model).
* :class:`StepVerifier`: ``fn(text) -> bool`` marks a partial solution as still valid
  (log phi = 0 or -inf), checked at every step boundary.

Each keeps, per particle, the last value it added, so that its increments telescope: with
``every_step=False`` it adds log phi(x) once, when the sequence finishes; with
``every_step=True`` it scores the prefix at every boundary s and adds
log f(x_<=s) - log f(x_<s) (a twist-like estimate, f(empty prefix) = 1), the last increment
completing log phi(x) of the finished sequence. Either way the increments sum to log phi(x).
Without a ``step_delimiter`` a :class:`ppl.Program` has a boundary only at the end, so both
modes coincide there.

:class:`Twist` is token-level: ``log_psi(lm_state) -> [n, V]`` gives log psi(x_<t v) for every
next token v; its increments log psi(x_<t v) - log psi(x_<t) telescope, and the twist is
removed at EOS and at the length cap, so it changes the proposal's guidance and the
intermediate weights but never the final target.

A particle at -inf stays at -inf: a difference is never taken between two infinities.
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from genppl.models.interface import InputError

from .potential import Potential

__all__ = ["SequenceScorer", "HostScorer", "StepVerifier", "StepReward", "FinalReward", "Twist"]


def _increment(new: jax.Array, old: jax.Array) -> jax.Array:
    """new - old in log space, with -inf absorbing (never -inf - -inf = NaN)."""
    dead = jnp.isneginf(old) | jnp.isneginf(new)
    return jnp.where(dead, -jnp.inf, new - jnp.where(jnp.isneginf(old), 0.0, old))


class _BoundaryScorer(Potential):
    """Shared telescoping logic; subclasses implement :meth:`_evaluate`."""

    def __init__(self, every_step: bool):
        if not isinstance(every_step, (bool, np.bool_)):
            raise InputError(f"every_step must be True or False, got {every_step!r}")
        self.every_step = bool(every_step)

    def init(self, lm_state):
        # log f of the empty prefix is 0: nothing has been added yet
        return jnp.zeros(lm_state.length.shape, jnp.float32)

    def _evaluate(self, lm_state, rows) -> jax.Array:
        """log f [n] of each particle's current sequence (only ``rows`` [n] are used)."""
        raise NotImplementedError

    #: True: every boundary adds the full log f (phi is the product over steps)
    cumulative = False

    def logw_boundary(self, pstate, lm_state, at_boundary, final):
        return self._account(pstate, lm_state, at_boundary, final, lambda rows: self._evaluate(lm_state, rows))

    def _account(self, pstate, lm_state, at_boundary, final, evaluate):
        """The boundary's bookkeeping around ``evaluate(rows) -> log f [n]`` (a subclass may
        compute the values its own way and reuse this)."""
        at_boundary = jnp.asarray(at_boundary, bool)
        rows = at_boundary if self.every_step else at_boundary & jnp.asarray(final, bool)
        value = jnp.asarray(evaluate(rows), jnp.float32)
        inc = value if self.cumulative else _increment(value, pstate)
        inc = jnp.where(rows, inc, 0.0)
        return jnp.where(rows, value, pstate), inc


class SequenceScorer(_BoundaryScorer):
    """A sequence-level potential from a JAX function of the token buffer.

    ``fn(tokens [n, T] int32, length [n], prompt_length [n]) -> log phi [n]``: the generated
    tokens of particle i are ``tokens[i, prompt_length[i]:length[i]]``; when the sequence
    ended with EOS, the EOS token is the last of them. Buffer entries past ``length`` are
    unspecified. ``fn`` is traced inside ``jax.jit`` (it must be a pure JAX function);
    -inf rules a sequence out.

    every_step: False adds log phi(x) once, at the end; True also scores each prefix at every
    step boundary and adds the difference (the final increment completes log phi(x)). Use it
    when fn of a prefix estimates how promising the prefix is; a prefix scored -inf kills
    the particle for good.

    >>> from genppl import ppl
    >>> longer_is_better = ppl.SequenceScorer(
    ...     lambda tokens, length, prompt_length: 0.5 * (length - prompt_length))
    """

    def __init__(self, fn, every_step: bool = False):
        if not callable(fn):
            raise InputError(f"SequenceScorer needs a function (tokens, length, prompt_length) -> "
                             f"log phi [n]; got {type(fn).__name__}")
        super().__init__(every_step)
        self.fn = fn

    def _evaluate(self, lm_state, rows):
        value = jnp.asarray(self.fn(lm_state.tokens, lm_state.length, lm_state.prompt_length))
        n = lm_state.length.shape[0]
        if value.shape != (n,):
            raise InputError(f"SequenceScorer's function must return one log-weight per particle, "
                             f"shape ({n},); it returned shape {value.shape}")
        if not (jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer)):
            raise InputError(f"SequenceScorer's function must return real numbers, got dtype {value.dtype}")
        return value.astype(jnp.float32)

    def __repr__(self) -> str:
        return f"SequenceScorer({_name(self.fn)}{', every_step' if self.every_step else ''})"


class HostScorer(_BoundaryScorer):
    """A sequence-level potential computed by Python on the host (``on_host = True``).

    fn: log phi of decoded texts. With ``batched=True`` (default) ``fn(list[str]) ->`` a
    sequence of floats of the same length; with ``batched=False`` ``fn(str) -> float``, called
    once per text. Texts are ``tokenizer.decode(generated ids)`` (special tokens such as EOS
    dropped by the tokenizer), with the prompt in front when ``include_prompt=True``.
    Only particles at a boundary that needs a score are decoded and scored.

    Values must be real numbers: -inf rules a text out; NaN, +inf, booleans and non-numbers
    are errors (the message names the text), never silently turned into weights.
    ``fn`` must be deterministic: JAX may evaluate a pure callback more than once.

    Inside ``jax.jit`` the call goes through ``jax.pure_callback`` (an error raised by ``fn``
    or by the validation then surfaces as a ``JaxRuntimeError`` that carries its message);
    called eagerly, the function runs directly and errors are raised as they are.

    >>> from genppl import ppl
    >>> scorer = ppl.HostScorer(lambda texts: [float(t.count("a")) for t in texts], lm.tokenizer)  # doctest: +SKIP
    """

    on_host = True

    def __init__(self, fn, tokenizer, every_step: bool = False, batched: bool = True,
                 include_prompt: bool = False):
        if not callable(fn):
            raise InputError(f"HostScorer needs a function of texts; got {type(fn).__name__}")
        if not callable(getattr(tokenizer, "decode", None)):
            raise InputError("HostScorer needs a tokenizer with .decode(ids) (e.g. lm.tokenizer); "
                             f"got {type(tokenizer).__name__}")
        super().__init__(every_step)
        self.fn, self.tokenizer = fn, tokenizer
        self.batched, self.include_prompt = bool(batched), bool(include_prompt)

    # ---- host side ----------------------------------------------------------------------
    def texts(self, tokens, length, prompt_length, rows=None) -> list[str]:
        """Decoded texts of the particles in ``rows`` (all when None), host-side."""
        tokens, length, prompt_length = (np.asarray(a) for a in (tokens, length, prompt_length))
        idx = range(tokens.shape[0]) if rows is None else np.flatnonzero(np.asarray(rows))
        out = []
        for i in idx:
            start = 0 if self.include_prompt else int(prompt_length[i])
            out.append(self.tokenizer.decode([int(t) for t in tokens[i, start:int(length[i])]]))
        return out

    def score_texts(self, texts: list[str]) -> np.ndarray:
        """log phi of each text (float32), validated."""
        if self.batched:
            values = self.fn(list(texts))
            if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
                raise InputError(f"{self._who()} must return a list of numbers, one per text; got "
                                 f"{type(values).__name__}. Pass batched=False for a per-text function")
            values = list(np.asarray(values).reshape(-1)) if isinstance(values, np.ndarray) \
                and values.ndim <= 1 else list(values)
            if len(values) != len(texts):
                raise InputError(f"{self._who()} returned {len(values)} values for {len(texts)} texts: "
                                 "return exactly one log-weight per text, in order")
        else:
            values = [self.fn(t) for t in texts]
        return np.array([self._convert(v, t) for v, t in zip(values, texts)], np.float32)

    def _convert(self, value, text) -> float:
        if isinstance(value, np.ndarray) and value.shape == ():
            value = value[()]
        if isinstance(value, (bool, np.bool_)):
            raise InputError(f"{self._who()} returned a boolean ({value}) for text {text!r}: return "
                             "a log-weight (0.0 or -inf), or use ppl.StepVerifier for a yes/no check")
        if not isinstance(value, numbers.Real):
            raise InputError(f"{self._who()} returned {value!r} ({type(value).__name__}) for text "
                             f"{text!r}: return a real number (a log-weight)")
        value = float(value)
        if math.isnan(value):
            raise InputError(f"{self._who()} returned NaN for text {text!r}: return -inf to rule a "
                             "text out, or a finite log-weight")
        if value == math.inf:
            raise InputError(f"{self._who()} returned +inf for text {text!r}: log-weights must be "
                             "finite or -inf")
        return value

    def _who(self) -> str:
        return f"{type(self).__name__}'s function {_name(self.fn)}"

    def _host(self, tokens, length, prompt_length, rows):
        # leading batch axes (many prompts mapped with vmap) are flattened: one call of fn
        rows = np.asarray(rows, bool)
        flat = rows.reshape(-1)
        out = np.zeros(flat.shape, np.float32)
        if flat.any():
            tokens = np.asarray(tokens).reshape(-1, np.shape(tokens)[-1])
            out[flat] = self.score_texts(self.texts(tokens, np.reshape(length, -1), np.reshape(prompt_length, -1),
                                                    flat))
        return out.reshape(rows.shape)

    # ---- device side --------------------------------------------------------------------
    def _evaluate(self, lm_state, rows):
        args = (lm_state.tokens, lm_state.length, lm_state.prompt_length, rows)
        if not any(isinstance(a, jax.core.Tracer) for a in args):
            return jnp.asarray(self._host(*args))  # eager: plain Python errors
        shape = jax.ShapeDtypeStruct(lm_state.length.shape, jnp.float32)
        return jax.pure_callback(self._host, shape, *args, vmap_method="broadcast_all")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_name(self.fn)}{', every_step' if self.every_step else ''})"


class StepVerifier(HostScorer):
    """A host-side check of partial solutions: ``fn(text) -> bool`` says "still valid".

    log phi is 0 while every checked prefix is valid and -inf from the first invalid one:
    the check runs at every step boundary (with a ``step_delimiter`` on the program) and on
    the finished text, so an invalid step kills its particle immediately. Texts are the
    decoded generation (see :class:`HostScorer`); ``batched=True`` takes
    ``fn(list[str]) -> list[bool]`` instead. ``fn`` must return a bool (Python or numpy).

    Example, for chains of thought where every completed equation "a + b = c" must hold::

        import re
        def equations_hold(text):
            for a, op, b, c in re.findall(r"(\\d+) ([-+*]) (\\d+) = (\\d+)\\.", text):
                a, b, c = int(a), int(b), int(c)
                if {"+": a + b, "-": a - b, "*": a * b}[op] != c:
                    return False
            return True

        verifier = ppl.StepVerifier(equations_hold, lm.tokenizer)
        program = ppl.Program(lm, prompt, 64, potential=verifier, step_delimiter=". ")
    """

    def __init__(self, fn, tokenizer, batched: bool = False, include_prompt: bool = False):
        super().__init__(fn, tokenizer, every_step=True, batched=batched, include_prompt=include_prompt)

    def _convert(self, value, text) -> float:
        if isinstance(value, np.ndarray) and value.shape == ():
            value = value[()]
        if not isinstance(value, (bool, np.bool_)):
            raise InputError(f"{self._who()} returned {value!r} ({type(value).__name__}) for text "
                             f"{text!r}: a step verifier must return True (valid) or False")
        return 0.0 if value else -math.inf


def content_length(lm_state, eos_id: int) -> jax.Array:
    """[n] each sequence's length without a trailing EOS (the text a reward reads)."""
    length = lm_state.length
    last = jnp.take_along_axis(lm_state.tokens, jnp.maximum(length - 1, 0)[:, None], 1)[:, 0]
    return length - ((last == eos_id) & (length > lm_state.prompt_length)).astype(length.dtype)


class StepReward(HostScorer):
    """A process reward model as a likelihood at every step: ``fn(texts) -> r`` in [0, 1].

    Target (step-level particle filtering, the state-space model of Puri et al. 2025):

        pi(x) ∝ p(x) * prod_k r(x_<=k)^beta   over the steps x_<=1, ..., x_<=K = x of x,

    the steps being the prefixes at the program's step boundaries (``step_delimiter``) and
    the finished text. Each boundary adds ``beta log r(x_<=k)`` once: a sequence that ends
    with the delimiter and then EOS has no further step, so the EOS-only transition adds
    nothing (its text is the last step's); an empty continuation is one (empty) step.
    :class:`FinalReward` is the other exact choice, p(x) r(x)^beta.

    r = 0 rules a prefix out. ``fn`` is batched (list of texts -> list of floats) unless
    ``batched=False``.
    """

    cumulative = True

    def __init__(self, fn, tokenizer, beta: float = 1.0, batched: bool = True, include_prompt: bool = False):
        if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not beta > 0:
            raise InputError(f"beta must be a positive number, got {beta!r}")
        eos_id = getattr(tokenizer, "eos_id", None)
        if eos_id is None:
            raise InputError("a reward potential needs the tokenizer's eos_id (e.g. lm.tokenizer)")
        super().__init__(fn, tokenizer, every_step=True, batched=batched, include_prompt=include_prompt)
        self.beta, self.eos_id = float(beta), int(eos_id)

    def init(self, lm_state):
        # "scored": the text length (EOS excluded) at the last rewarded step; one less than the
        # prompt so that even an empty continuation is rewarded once
        return {"value": jnp.zeros(lm_state.length.shape, jnp.float32), "scored": lm_state.prompt_length - 1}

    def logw_boundary(self, pstate, lm_state, at_boundary, final):
        return self._account(pstate, lm_state, at_boundary, final, lambda rows: self._evaluate(lm_state, rows))

    def _account(self, pstate, lm_state, at_boundary, final, evaluate):
        content = content_length(lm_state, self.eos_id)
        rows = jnp.asarray(at_boundary, bool) & (content > pstate["scored"])
        value = jnp.asarray(evaluate(rows), jnp.float32)
        new = {"value": jnp.where(rows, value, pstate["value"]), "scored": jnp.where(rows, content, pstate["scored"])}
        return new, jnp.where(rows, value, 0.0)

    def _convert(self, value, text) -> float:
        if isinstance(value, np.ndarray) and value.shape == ():
            value = value[()]
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) \
                or not 0.0 <= float(value) <= 1.0:
            raise InputError(f"{self._who()} returned {value!r} for text {text!r}: a reward must be a "
                             "number in [0, 1]")
        value = float(value)
        return -math.inf if value == 0.0 else self.beta * math.log(value)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_name(self.fn)}, beta={self.beta:g})"


class FinalReward(StepReward):
    """The finished solution's reward as the target, partial rewards as a twist:

        pi(x) ∝ p(x) * r(x)^beta.

    Each step boundary k adds beta (log r(x_<=k) - log r(x_<=k-1)) (r of the empty prefix
    taken as 1); the sum over a finished sequence is beta log r(x), so the rewards of partial
    solutions guide resampling without changing the target.
    """

    cumulative = False
    init = _BoundaryScorer.init
    logw_boundary = _BoundaryScorer.logw_boundary
    _account = _BoundaryScorer._account


class Twist(Potential):
    """A token-level twist psi from a JAX function ``log_psi(lm_state) -> [n, V]``, or, with
    ``params``, ``log_psi(params, lm_state) -> [n, V]``.

    ``log_psi(...)[i, v]`` is log psi(x_<t v) for particle i's prefix x_<t and every next
    token v (e.g. a learned value head). Increments:

    * non-EOS v: log psi(x_<t v) - log psi(x_<t)  (log psi of the empty prefix is 0);
    * EOS: - log psi(x_<t)  (the twist is removed; its EOS column is ignored);
    * cut at the length cap: - log psi(x).

    They telescope to 0 over every finished sequence, so a twist only guides (multiply it
    with the potentials that define the target). The state keeps, per particle, the current
    log psi(x_<t) and the row log psi(x_<t, .) (computed once per token, in ``update``).
    A -inf entry rules the token out; such a particle stays at -inf.

    A pytree: ``params`` (any pytree of arrays, e.g. a value head's weights) are its leaves,
    so twists that differ only in parameter values share one compiled program; the function
    and ``eos_id`` are static.

    >>> import jax.numpy as jnp
    >>> twist = Twist(lambda w, s: s.logits * w, eos_id=0, params=jnp.float32(0.5))
    """

    token_level = True
    data_fields = ("params",)

    def __init__(self, log_psi, eos_id: int, params=None):
        if not callable(log_psi):
            raise InputError(f"Twist needs a function lm_state -> log psi [n, V] (or (params, lm_state) -> "
                             f"log psi with params=...); got {type(log_psi).__name__}")
        if isinstance(eos_id, bool) or not isinstance(eos_id, numbers.Integral) or eos_id < 0:
            raise InputError(f"eos_id must be a token id (e.g. lm.eos_id), got {eos_id!r}")
        self.log_psi, self.eos_id = log_psi, int(eos_id)
        self.params = params
        self.with_params = params is not None

    def _row(self, lm_state):
        row = self.log_psi(self.params, lm_state) if self.with_params else self.log_psi(lm_state)
        row = jnp.asarray(row)
        if row.shape != lm_state.logits.shape:
            raise InputError(f"Twist's log_psi must return shape {tuple(lm_state.logits.shape)} "
                             f"(particles, vocabulary); it returned {row.shape}")
        return row.astype(jnp.float32)

    def init(self, lm_state):
        return {"log_psi": jnp.zeros(lm_state.length.shape, jnp.float32), "next": self._row(lm_state)}

    def logw_next(self, pstate, lm_state):
        cur, row = pstate["log_psi"], pstate["next"]
        inc = row - jnp.where(jnp.isneginf(cur), 0.0, cur)[:, None]
        inc = inc.at[:, self.eos_id].set(-cur)
        return jnp.where(jnp.isneginf(cur)[:, None], -jnp.inf, inc)

    def update(self, pstate, lm_state, token):
        cur, row = pstate["log_psi"], pstate["next"]
        chosen = jnp.take_along_axis(row, token[:, None], 1)[:, 0]
        # at EOS the twist is removed (log psi = 0), a dead particle stays dead
        new = jnp.where(token == self.eos_id, jnp.where(jnp.isneginf(cur), -jnp.inf, 0.0), chosen)
        new = jnp.where(jnp.isneginf(cur), -jnp.inf, new)
        return {"log_psi": new, "next": self._row(lm_state)}

    def logw_cap(self, pstate, lm_state):
        cur = pstate["log_psi"]
        return jnp.where(jnp.isneginf(cur), -jnp.inf, -cur)

    def __repr__(self) -> str:
        return f"Twist({_name(self.log_psi)})"


def _name(fn) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__

