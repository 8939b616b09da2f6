"""Potentials: the factors phi of a target pi(x) ∝ p(x)^alpha * prod_k phi_k(x).

A potential is evaluated incrementally while particles grow, through a small per-particle
state (a pytree whose leaves lead with the particle axis, like the LM state):

* token-level potentials know their increment for *every* next token at once,
  ``logw_next(pstate, lm_state) -> [n, V]``; the EOS column is the increment of finishing
  there (so it carries the final check, e.g. "the DFA accepts"). These drive masks and the
  locally optimal proposal.
* sequence-level potentials add ``logw_boundary(...)`` at step boundaries (a delimiter, EOS
  or the cap), for the particles that are at one; ``final`` marks those that have finished.
* ``logw_cap`` is the increment of a sequence cut at the length cap without EOS.

A twist is a potential whose increments telescope: log psi(x_<=t) - log psi(x_<t), with the
final increment replacing psi by phi. Summed over a finished sequence, every potential's
increments equal its log phi(x); kernels rely on that.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


class _Static:
    """The static part of a potential's pytree: its non-data attributes, compared by value.

    Values that cannot be hashed (a user's object without ``__hash__``) compare by identity.
    """

    __slots__ = ("items",)

    def __init__(self, items):
        self.items = tuple(sorted(items))

    def __eq__(self, other):
        if not isinstance(other, _Static) or len(self.items) != len(other.items):
            return False
        for (ka, va), (kb, vb) in zip(self.items, other.items):
            if ka != kb or not (va is vb or _equal(va, vb)):
                return False
        return True

    def __hash__(self):
        return hash(tuple((k, _hash(v)) for k, v in self.items))


def _equal(a, b) -> bool:
    try:
        return bool(a == b)
    except Exception:  # arrays or objects without a boolean equality
        return False


def _hash(value):
    try:
        return hash(value)
    except TypeError:
        return id(value)


def _flatten(potential):
    cls = type(potential)
    data = tuple(getattr(potential, name) for name in cls.data_fields)
    static = [(k, v) for k, v in vars(potential).items()
              if k not in cls.data_fields and k not in cls.static_exclude]
    return data, _Static(static)


def _unflatten(cls, static, data):
    potential = object.__new__(cls)
    potential.__dict__.update(static.items)
    potential.__dict__.update(zip(cls.data_fields, data))
    return potential


class Potential:
    """Base class: the neutral potential (log phi = 0). Override what applies.

    Every potential is a pytree (subclasses are registered automatically): the attributes
    named in ``data_fields`` (tables, weights, nested potentials) are its leaves, every other
    attribute is static and must be hashable. Two potentials of one kind whose tables have
    the same shapes therefore share one compiled sweep. Attributes named in
    ``static_exclude`` (a regex's pattern text, say) are for display only: they are dropped
    when flattening, so code that runs under ``jit`` must not read them.
    """

    data_fields: tuple[str, ...] = ()
    static_exclude: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        jax.tree_util.register_pytree_node(cls, _flatten, lambda s, d: _unflatten(cls, s, d))

    #: True when ``logw_next`` gives the increment for every next token.
    token_level: bool = False
    #: True when evaluation runs Python on the host (through ``jax.pure_callback``).
    on_host: bool = False

    def init(self, lm_state) -> object:
        """Per-particle state after the prompt (leaves lead with n)."""
        return ()

    def logw_next(self, pstate, lm_state) -> jax.Array:
        """Increment [n, V] for appending each token (EOS: finishing). Token-level only."""
        return jnp.zeros(lm_state.logits.shape, jnp.float32)

    def update(self, pstate, lm_state, token) -> object:
        """State after ``token`` [n] was appended (``lm_state`` already includes it)."""
        return pstate

    def logw_boundary(self, pstate, lm_state, at_boundary, final) -> tuple[object, jax.Array]:
        """Sequence-level increment [n] (0 where ``at_boundary`` is False); ``final`` [n]
        marks particles that have finished (EOS or cap), whose increment completes log phi."""
        return pstate, jnp.zeros(lm_state.length.shape, jnp.float32)

    def logw_cap(self, pstate, lm_state) -> jax.Array:
        """Increment [n] for a sequence cut at the length cap (no EOS)."""
        return jnp.zeros(lm_state.length.shape, jnp.float32)

    # ---- algebra ------------------------------------------------------------------------
    def __mul__(self, other: "Potential") -> "Potential":
        if not isinstance(other, Potential):
            return NotImplemented
        return Product((*_factors(self), *_factors(other)))

    def __pow__(self, alpha: float) -> "Potential":
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
            raise ValueError(f"a potential's power must be a positive number, got {alpha!r}")
        return Power(self, float(alpha))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _factors(p: Potential):
    return p.factors if isinstance(p, Product) else (p,)


class Product(Potential):
    """phi_1 * phi_2 * ...: increments add; the state is the tuple of the factors' states."""

    data_fields = ("factors",)

    def __init__(self, factors):
        self.factors = tuple(factors)
        self.token_level = any(f.token_level for f in self.factors)
        self.on_host = any(f.on_host for f in self.factors)

    def init(self, lm_state):
        return tuple(f.init(lm_state) for f in self.factors)

    def logw_next(self, pstate, lm_state):
        total = jnp.zeros(lm_state.logits.shape, jnp.float32)
        for f, s in zip(self.factors, pstate):
            if f.token_level:
                total = total + f.logw_next(s, lm_state)
        return total

    def update(self, pstate, lm_state, token):
        return tuple(f.update(s, lm_state, token) for f, s in zip(self.factors, pstate))

    def logw_boundary(self, pstate, lm_state, at_boundary, final):
        states, total = [], jnp.zeros(lm_state.length.shape, jnp.float32)
        for f, s in zip(self.factors, pstate):
            s, w = f.logw_boundary(s, lm_state, at_boundary, final)
            states.append(s)
            total = total + w
        return tuple(states), total

    def logw_cap(self, pstate, lm_state):
        total = jnp.zeros(lm_state.length.shape, jnp.float32)
        for f, s in zip(self.factors, pstate):
            total = total + f.logw_cap(s, lm_state)
        return total

    def __repr__(self) -> str:
        return " * ".join(map(repr, self.factors)) or "Product()"


def scale(alpha: float, logw: jax.Array) -> jax.Array:
    """alpha * logw with 0 * -inf = 0 avoided: -inf stays -inf for alpha > 0."""
    return jnp.where(jnp.isneginf(logw), -jnp.inf, alpha * logw)


class Power(Potential):
    """phi ** alpha: every increment is multiplied by alpha (hard zeros stay zero)."""

    data_fields = ("base", "alpha")

    def __init__(self, base: Potential, alpha: float):
        self.base, self.alpha = base, alpha
        self.token_level, self.on_host = base.token_level, base.on_host

    def init(self, lm_state):
        return self.base.init(lm_state)

    def logw_next(self, pstate, lm_state):
        return scale(self.alpha, self.base.logw_next(pstate, lm_state))

    def update(self, pstate, lm_state, token):
        return self.base.update(pstate, lm_state, token)

    def logw_boundary(self, pstate, lm_state, at_boundary, final):
        pstate, w = self.base.logw_boundary(pstate, lm_state, at_boundary, final)
        return pstate, scale(self.alpha, w)

    def logw_cap(self, pstate, lm_state):
        return scale(self.alpha, self.base.logw_cap(pstate, lm_state))

    def __repr__(self) -> str:
        return f"({self.base!r}) ** {float(self.alpha):g}"


jax.tree_util.register_pytree_node(Potential, _flatten, lambda s, d: _unflatten(Potential, s, d))


def has_boundary(potential: Potential) -> bool:
    """Whether any factor overrides the sequence-level hook (kernels skip it otherwise)."""
    if isinstance(potential, Product):
        return any(has_boundary(f) for f in potential.factors)
    if isinstance(potential, Power):
        return has_boundary(potential.base)
    return type(potential).logw_boundary is not Potential.logw_boundary
