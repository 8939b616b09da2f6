"""Probabilistic circuits as tensorised blocks, compiled to one JAX program.

A circuit over D variables is a DAG of *blocks*, each a vector of units over one scope
(a set of variables), listed children first (the root, one unit, last):

* :class:`Input`: ``size`` units over one variable, each a categorical (``num_categories``
  log-probabilities) or a Gaussian (mean, log standard deviation);
* :class:`Product`: ``"hadamard"`` (children of equal size, unit-wise product) or
  ``"kronecker"`` (two children, every pair of units: size K1 * K2); children's scopes must
  be disjoint (decomposability);
* :class:`Sum`: ``size`` mixtures of the units of its children concatenated (so several
  partitions of a region can be mixed); children's scopes must be equal (smoothness).

:class:`Circuit` checks both properties on construction (a clear :class:`InputError` names the
offending block), computes the scopes, and evaluates every block in topological order inside
one jitted function. Parameters live in a separate pytree (``params``: a tuple with one entry
per block, ``None`` for products), normalised, in log space, so queries and learning are pure
functions of ``(params, data)``. Data are ``x`` [N, D] float (categories as numbers) with an
optional ``missing`` [N, D] bool mask; a missing variable is summed out (its input units give 1),
or maximised in the max-product semiring.

>>> import jax
>>> c = Circuit([Input(0, 2, num_categories=2), Input(1, 2, num_categories=2),
...              Product((0, 1), "hadamard"), Sum((2,), 1)], num_vars=2)
>>> params = c.init(jax.random.key(0))
>>> c.log_likelihood(params, [[0, 1], [1, 1]]).shape
(2,)
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from genppl.models.interface import InputError

from .hmm import log_matmul

__all__ = ["Circuit", "Input", "Product", "Sum"]


@dataclasses.dataclass(frozen=True)
class Input:
    """``size`` distributions over variable ``var``: categorical (``num_categories``) or
    Gaussian (``num_categories=None``). ``frozen``: EM and SGD leave it unchanged."""

    var: int
    size: int
    num_categories: int | None = None
    frozen: bool = False


@dataclasses.dataclass(frozen=True)
class Product:
    children: tuple
    mode: str = "hadamard"


@dataclasses.dataclass(frozen=True)
class Sum:
    children: tuple
    size: int


class Circuit:
    """A smooth, decomposable circuit (see the module docstring). Hashable by identity, so
    it is a static argument of the compiled queries."""

    def __init__(self, blocks, num_vars: int):
        self.blocks = tuple(blocks)
        self.num_vars = int(num_vars)
        if not self.blocks:
            raise InputError("a circuit needs at least one block")
        self.sizes, self.scopes = [], []
        for i, b in enumerate(self.blocks):
            size, scope = self._check(i, b)
            self.sizes.append(size)
            self.scopes.append(scope)
        if self.sizes[-1] != 1:
            raise InputError(f"the root (last block) must have one unit, it has {self.sizes[-1]}: "
                             "end with Sum(children, 1)")
        if self.scopes[-1] != frozenset(range(self.num_vars)):
            missing = sorted(set(range(self.num_vars)) - self.scopes[-1])
            raise InputError(f"the root's scope misses variables {missing}")
        self.var_kinds = {}
        for b in self.blocks:
            if isinstance(b, Input):
                kind = b.num_categories
                if self.var_kinds.setdefault(b.var, kind) != kind:
                    raise InputError(f"variable {b.var} has inputs of different kinds (categories {kind} "
                                     f"vs {self.var_kinds[b.var]})")

    def _check(self, i, b):
        if isinstance(b, Input):
            if not 0 <= b.var < self.num_vars:
                raise InputError(f"block {i}: input variable {b.var} outside [0, {self.num_vars})")
            if b.size < 1 or (b.num_categories is not None and b.num_categories < 1):
                raise InputError(f"block {i}: size and num_categories must be positive")
            return b.size, frozenset([b.var])
        children = tuple(b.children)
        if not children or any(not (0 <= c < i) for c in children):
            raise InputError(f"block {i}: children must be earlier blocks (indices below {i}), got {children}")
        scopes = [self.scopes[c] for c in children]
        sizes = [self.sizes[c] for c in children]
        if isinstance(b, Product):
            union = frozenset().union(*scopes)
            if sum(len(s) for s in scopes) != len(union):
                raise InputError(f"block {i} is not decomposable: its children {children} share variables "
                                 f"{sorted(set.intersection(*map(set, scopes)) if len(scopes) > 1 else set())}")
            if b.mode == "hadamard":
                if len(set(sizes)) != 1:
                    raise InputError(f"block {i}: a Hadamard product needs children of one size, got {sizes}")
                return sizes[0], union
            if b.mode == "kronecker":
                if len(children) != 2:
                    raise InputError(f"block {i}: a Kronecker product takes exactly two children")
                return sizes[0] * sizes[1], union
            raise InputError(f"block {i}: product mode must be 'hadamard' or 'kronecker', got {b.mode!r}")
        if isinstance(b, Sum):
            if any(s != scopes[0] for s in scopes):
                raise InputError(f"block {i} is not smooth: its children {children} have scopes "
                                 f"{[sorted(s) for s in scopes]}")
            if b.size < 1:
                raise InputError(f"block {i}: a sum needs size >= 1")
            return b.size, scopes[0]
        raise InputError(f"block {i}: expected Input, Product or Sum, got {type(b).__name__}")

    @property
    def num_params(self) -> int:
        return sum(int(np.prod(s)) for s in self._param_shapes() if s)

    def _param_shapes(self):
        shapes = []
        for i, b in enumerate(self.blocks):
            if isinstance(b, Input):
                shapes.append((b.size, b.num_categories) if b.num_categories else (b.size, 2))
            elif isinstance(b, Sum):
                shapes.append((b.size, sum(self.sizes[c] for c in b.children)))
            else:
                shapes.append(None)
        return shapes

    def init(self, key, concentration: float = 1.0):
        """Random normalised log-parameters (Gaussians: means ~ N(0, 1), unit scale)."""
        keys = jax.random.split(key, len(self.blocks))
        params = []
        for k, b, shape in zip(keys, self.blocks, self._param_shapes()):
            if shape is None:
                params.append(None)
            elif isinstance(b, Input) and b.num_categories is None:
                params.append(jnp.stack([jax.random.normal(k, (b.size,)), jnp.zeros(b.size)], -1))
            else:
                params.append(jax.nn.log_softmax(jax.random.normal(k, shape) / np.sqrt(concentration), -1))
        return tuple(params)

    def normalize(self, params):
        """Project unconstrained parameters (e.g. after an SGD step) to normalised ones."""
        out = []
        for b, p in zip(self.blocks, params):
            if p is None or (isinstance(b, Input) and b.num_categories is None):
                out.append(p)
            else:
                out.append(jax.nn.log_softmax(p, -1))
        return tuple(out)

    # ---- evaluation -------------------------------------------------------------------------
    def check_data(self, x, missing=None):
        x = jnp.asarray(x, jnp.result_type(float))
        if x.ndim != 2 or x.shape[1] != self.num_vars:
            raise InputError(f"data must be [N, {self.num_vars}] (one column per variable), got {x.shape}")
        missing = jnp.zeros(x.shape, bool) if missing is None else jnp.asarray(missing, bool)
        if missing.shape != x.shape:
            raise InputError(f"missing must have the data's shape {x.shape}, got {missing.shape}")
        if not isinstance(x, jax.core.Tracer):
            for v, k in self.var_kinds.items():
                if k is not None:
                    col = np.asarray(x[:, v])[~np.asarray(missing[:, v])]
                    if col.size and (col.min() < 0 or col.max() >= k or np.any(col != np.round(col))):
                        raise InputError(f"variable {v} is categorical with {k} values: observed values must be "
                                         f"integers in [0, {k})")
        return x, missing

    def forward(self, params, x, missing, semiring: str = "sum", shifts=None):
        """Log-values [N, size] of every block (traceable). semiring 'sum' (likelihoods) or
        'max' (max-product). shifts: optional per-input-block additive terms (their gradient
        is the flow through each input unit)."""
        vals = []
        reduce = jax.nn.logsumexp if semiring == "sum" else jnp.max
        for i, (b, p) in enumerate(zip(self.blocks, params)):
            if isinstance(b, Input):
                col = x[:, b.var]
                miss = missing[:, b.var][:, None]
                if b.num_categories:
                    obs = p[:, jnp.clip(col.astype(jnp.int32), 0, b.num_categories - 1)].T
                    out = jnp.where(miss, reduce(p, -1)[None], obs)
                else:
                    mean, log_std = p[:, 0], p[:, 1]
                    z = (col[:, None] - mean[None]) * jnp.exp(-log_std)[None]
                    peak = -log_std - 0.5 * jnp.log(2 * jnp.pi)
                    obs = peak[None] - 0.5 * z**2
                    out = jnp.where(miss, 0.0 if semiring == "sum" else peak[None], obs)
                if shifts is not None and shifts[i] is not None:
                    out = out + shifts[i]
            elif isinstance(b, Product):
                kids = [vals[c] for c in b.children]
                if b.mode == "hadamard":
                    out = functools.reduce(jnp.add, kids)
                else:
                    out = (kids[0][:, :, None] + kids[1][:, None, :]).reshape(x.shape[0], -1)
            else:
                child = jnp.concatenate([vals[c] for c in b.children], -1)
                if semiring == "sum":
                    out = log_matmul(child, p.T)
                else:
                    out = jnp.max(child[:, None, :] + p[None], -1)
            vals.append(out)
        return vals

    @functools.partial(jax.jit, static_argnums=(0, 4))
    def _root(self, params, x, missing, semiring="sum"):
        return self.forward(params, x, missing, semiring)[-1][:, 0]

    def log_likelihood(self, params, x, missing=None) -> jax.Array:
        """log p(x_observed) [N]: missing variables are marginalised exactly."""
        x, missing = self.check_data(x, missing)
        return self._root(params, x, missing)

    def __repr__(self) -> str:
        kinds = {t: sum(isinstance(b, t) for b in self.blocks) for t in (Input, Product, Sum)}
        return (f"Circuit({self.num_vars} variables, {kinds[Input]} input / {kinds[Product]} product / "
                f"{kinds[Sum]} sum blocks, {self.num_params} parameters)")
