"""Trainable adapters for learned proposals and twists, and the LM that carries them.

* :class:`TabularAdapter`: a logits table over a :class:`TabularLM`'s prefixes, added to the
  LM's logits (exact tests: q(x) can be enumerated).
* :class:`LoRA`: low-rank adapters W + scale * A @ B on chosen projections of a
  :class:`TransformerLM` (B starts at zero, so the adapted LM starts as the base LM).
* :class:`TabularTwist` / :class:`TwistHead`: log psi(x_<t v) for every next token v at once,
  from the prefix (tabular) or from the decoder's final hidden state (a linear head).
* :class:`GuidedLM`: the base LM plus an optional proposal LM and twist, run in one state:
  its logits are the base LM's, and its cache also holds the proposal LM's next-token logits
  (``cache["prop_logits"]``) and the twist's row (``cache["twist"]``). Every parameter is a
  pytree leaf of the GuidedLM, so a :class:`ppl.Program` built on it can be passed to
  ``jax.jit`` with the parameters traced.

Adapters share one small interface: ``init(key) -> params`` (a pytree of arrays),
``check(params)`` (raises :class:`InputError` on a shape mismatch), and ``apply(params)``
(a proposal LM) or ``bind(params)`` (a twist for :class:`GuidedLM`: a
:class:`TableTwistRows` or :class:`HeadTwistRows`, pytrees whose parameters are leaves).
Everything here is data for ``jax.jit``: new parameter values reuse compiled programs.

>>> import jax
>>> from genppl import models
>>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=3, max_len=2)
>>> adapter = models.TabularAdapter(lm)
>>> guided = models.GuidedLM(lm, proposal=adapter.apply(adapter.init(jax.random.key(1))))
>>> guided.prefill([1], 4, 2).cache["prop_logits"].shape
(4, 3)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .interface import InputError, LanguageModel
from .tabular import TabularLM


def check_params(template, params, what: str) -> None:
    """Raise InputError unless ``params`` has the structure and shapes of ``template``."""
    want = jax.tree_util.tree_flatten_with_path(template)[0]
    try:
        got = jax.tree_util.tree_flatten_with_path(params)[0]
    except Exception as err:  # noqa: BLE001 - anything that is not a pytree
        raise InputError(f"{what}: parameters must be a pytree of arrays, got {type(params).__name__}") from err
    names = [jax.tree_util.keystr(p) for p, _ in want]
    if [jax.tree_util.keystr(p) for p, _ in got] != names:
        raise InputError(f"{what}: parameters have entries {[jax.tree_util.keystr(p) for p, _ in got][:6]}... "
                         f"but {names[:6]}... were expected: were they made by another adapter or model?")
    for (path, w), (_, g) in zip(want, got):
        if np.shape(g) != np.shape(w):
            raise InputError(f"{what}: parameter {jax.tree_util.keystr(path)} has shape {np.shape(g)} but the "
                             f"model needs {np.shape(w)}: initialise the parameters with this adapter's init()")


# ---- proposal adapters ------------------------------------------------------------------
class TabularAdapter:
    """q's logits = the tabular LM's log-probs + a learned table [num_prefixes, V] (init 0).

    >>> import jax
    >>> from genppl import models
    >>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=3, max_len=2)
    >>> adapter = models.TabularAdapter(lm)
    >>> adapter.apply(adapter.init(jax.random.key(0))).table.shape == lm.table.shape
    True
    """

    def __init__(self, lm: TabularLM):
        if not isinstance(lm, TabularLM):
            raise InputError(f"TabularAdapter needs a models.TabularLM, got {type(lm).__name__}")
        self.lm = lm

    def init(self, key):
        return {"logits": jnp.zeros(self.lm.table.shape, jnp.float32)}

    def check(self, params):
        check_params(self.init(None), params, "TabularAdapter")

    def apply(self, params) -> TabularLM:
        table = jax.nn.log_softmax(self.lm.table + params["logits"], axis=-1)
        return TabularLM(table, self.lm.vocab_size, self.lm.eos_id, self.lm.max_len)

    def __repr__(self) -> str:
        return f"TabularAdapter({self.lm!r})"


class LoRA:
    """Low-rank adapters on the projections of a TransformerLM whose names contain ``targets``.

    Each adapted kernel W [d_in, d_out] becomes W + (scale / rank) * A @ B with A [d_in, r]
    ~ N(0, 1/d_in) and B [r, d_out] = 0, so the adapted LM starts equal to the base LM.
    ``apply`` merges the adapters into a new TransformerLM (cheap for small models).

    >>> from genppl import models  # doctest: +SKIP
    >>> lora = models.LoRA(models.load(), rank=4)  # doctest: +SKIP
    >>> adapted = lora.apply(lora.init(jax.random.key(0)))  # doctest: +SKIP
    """

    def __init__(self, lm, rank: int = 4, targets=("q_proj", "v_proj"), scale: float = 1.0):
        from .transformer import TransformerLM

        if not isinstance(lm, TransformerLM):
            raise InputError(f"LoRA needs a models.TransformerLM, got {type(lm).__name__}")
        if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
            raise InputError(f"rank must be a positive integer, got {rank!r}")
        self.lm, self.rank, self.scale = lm, rank, float(scale)
        self.targets = tuple(targets)
        leaves = jax.tree_util.tree_flatten_with_path(lm.params)[0]
        self.shapes = {}
        for path, leaf in leaves:
            name = jax.tree_util.keystr(path)
            if "kernel" in name and leaf.ndim == 2 and any(t in name for t in self.targets):
                self.shapes[name] = tuple(leaf.shape)
        if not self.shapes:
            raise InputError(f"no projection matches targets {self.targets}: use names such as "
                             "'q_proj', 'k_proj', 'v_proj', 'o_proj', 'up_proj', 'down_proj'")

    def init(self, key):
        keys = jax.random.split(key if key is not None else jax.random.key(0), len(self.shapes))
        params = {}
        for k, (name, (d_in, d_out)) in zip(keys, sorted(self.shapes.items())):
            params[name] = {"a": jax.random.normal(k, (d_in, self.rank), jnp.float32) / np.sqrt(d_in),
                            "b": jnp.zeros((self.rank, d_out), jnp.float32)}
        return params

    def check(self, params):
        check_params(self.init(jax.random.key(0)), params, "LoRA")

    def apply(self, params):
        from .transformer import TransformerLM

        factor = self.scale / self.rank

        def merge(path, leaf):
            ab = params.get(jax.tree_util.keystr(path))
            if ab is None:
                return leaf
            return (leaf.astype(jnp.float32) + factor * ab["a"] @ ab["b"]).astype(leaf.dtype)

        merged = jax.tree_util.tree_map_with_path(merge, self.lm.params)
        lm = self.lm
        return TransformerLM(lm.graphdef, merged, lm.config, lm.tokenizer, lm.dtype, lm.kv_sharding)

    def __repr__(self) -> str:
        return f"LoRA(rank={self.rank}, targets={self.targets}, {len(self.shapes)} matrices)"


# ---- twists -----------------------------------------------------------------------------
@jax.tree_util.register_pytree_node_class
class TableTwistRows:
    """A :class:`TabularTwist` bound to its parameters (pytree leaves): the row
    log psi(x_<t, .) is the table's row for the prefix code of x_<t."""

    kind = "table"
    needs_hidden = False

    def __init__(self, params):
        self.params = params

    def tree_flatten(self):
        return (self.params,), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(children[0])

    def rows(self, base_cache, last_pos, hidden):
        """log psi(x_<t v) [n, V] after each particle's last real token."""
        n = last_pos.shape[0]
        code = base_cache["code"][jnp.arange(n), last_pos]
        return self.params["log_psi"][code]


@jax.tree_util.register_pytree_node_class
class HeadTwistRows(TableTwistRows):
    """A :class:`TwistHead` bound to its parameters: log psi(x_<t, .) = h_t @ W + b from the
    decoder's final hidden state h_t after the last real token."""

    kind = "head"
    needs_hidden = True

    def rows(self, base_cache, last_pos, hidden):
        return hidden.astype(jnp.float32) @ self.params["w"] + self.params["b"]


class TabularTwist:
    """log psi(x_<t v) = a learned table [num_prefixes, V] indexed by the prefix x_<t (init 0)."""

    def __init__(self, lm: TabularLM):
        if not isinstance(lm, TabularLM):
            raise InputError(f"TabularTwist needs a models.TabularLM, got {type(lm).__name__}")
        self.lm = lm

    def init(self, key):
        return {"log_psi": jnp.zeros(self.lm.table.shape, jnp.float32)}

    def check(self, params):
        check_params(self.init(None), params, "TabularTwist")

    def bind(self, params):
        return TableTwistRows(params)

    def __repr__(self) -> str:
        return f"TabularTwist({self.lm!r})"


class TwistHead:
    """log psi(x_<t v) = h_t @ W + b for every next token v, from the decoder's final hidden
    state h_t [hidden_size] (W, b start at 0: psi = 1)."""

    def __init__(self, lm):
        from .transformer import TransformerLM

        if not isinstance(lm, TransformerLM):
            raise InputError(f"TwistHead needs a models.TransformerLM, got {type(lm).__name__}")
        self.lm = lm

    def init(self, key):
        d, v = self.lm.config.hidden_size, self.lm.vocab_size
        return {"w": jnp.zeros((d, v), jnp.float32), "b": jnp.zeros((v,), jnp.float32)}

    def check(self, params):
        check_params(self.init(None), params, "TwistHead")

    def bind(self, params):
        return HeadTwistRows(params)

    def __repr__(self) -> str:
        return f"TwistHead(hidden={self.lm.config.hidden_size}, vocab={self.lm.vocab_size})"


# ---- the guided LM ----------------------------------------------------------------------
@jax.tree_util.register_pytree_node_class
class GuidedLM(LanguageModel):
    """The base LM, plus a proposal LM's next-token logits and a twist's row in the cache.

    ``logits`` are the base LM's (the target is unchanged); ``cache["prop_logits"]`` [n, V]
    holds the proposal LM's (when ``proposal`` is given) and ``cache["twist"]`` [n, V] the
    twist's log psi(x_<t, .) (when ``twist`` is given, a bound twist from an adapter's
    ``bind``). Both are computed in the same forward pass as the base LM's.
    """

    def __init__(self, base: LanguageModel, proposal: LanguageModel | None = None, twist=None):
        if not isinstance(base, LanguageModel):
            raise InputError(f"GuidedLM needs a base models.LanguageModel, got {type(base).__name__}")
        if proposal is not None and proposal.vocab_size != base.vocab_size:
            raise InputError(f"the proposal LM has {proposal.vocab_size} tokens but the base LM has "
                             f"{base.vocab_size}: adapt the same model")
        self.base, self.proposal, self.twist = base, proposal, twist
        self.vocab_size, self.eos_id = base.vocab_size, base.eos_id
        self.tokenizer, self.max_length = base.tokenizer, base.max_length

    def tree_flatten(self):
        return (self.base, self.proposal, self.twist), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        lm = object.__new__(cls)
        lm.base, lm.proposal, lm.twist = children
        lm.vocab_size, lm.eos_id = lm.base.vocab_size, lm.base.eos_id
        lm.tokenizer, lm.max_length = lm.base.tokenizer, lm.base.max_length
        return lm

    def _needs_hidden(self) -> bool:
        return self.twist is not None and self.twist.needs_hidden

    def _initial(self, prompt, prompt_length, capacity):
        hidden = None
        if self._needs_hidden():
            from .architectures import init_cache

            cache = init_cache(self.base.config, 1, capacity, self.base.dtype)
            positions = jnp.arange(prompt.shape[0], dtype=jnp.int32)[None]
            logits, cache, hidden = self.base.module(prompt[None], positions, cache, return_hidden=True)
            logits, hidden = logits[0, prompt_length - 1], hidden[:, prompt_length - 1]
        else:
            logits, cache = self.base._initial(prompt, prompt_length, capacity)
        out = {"base": cache}
        if self.proposal is not None:
            plogits, pcache = self.proposal._initial(prompt, prompt_length, capacity)
            out["prop"], out["prop_logits"] = pcache, plogits.astype(jnp.float32)[None]
        if self.twist is not None:
            out["twist"] = self.twist.rows(cache, jnp.reshape(prompt_length - 1, (1,)), hidden)
        return logits, out

    def _forward(self, cache, tokens, positions, mask):
        n = tokens.shape[0]
        hidden = None
        if self._needs_hidden():
            logits, base_cache, hidden = self.base.forward_hidden(cache["base"], tokens, positions)
        else:
            logits, base_cache = self.base._forward(cache["base"], tokens, positions, mask)
        count = mask.sum(-1)
        last = jnp.maximum(count - 1, 0)
        moved = (count > 0)[:, None]
        out = {"base": base_cache}
        if self.proposal is not None:
            plogits, pcache = self.proposal._forward(cache["prop"], tokens, positions, mask)
            plast = plogits[jnp.arange(n), last].astype(jnp.float32)
            out["prop"], out["prop_logits"] = pcache, jnp.where(moved, plast, cache["prop_logits"])
        if self.twist is not None:
            last_pos = positions[jnp.arange(n), last]
            h = None if hidden is None else hidden[jnp.arange(n), last]
            out["twist"] = jnp.where(moved, self.twist.rows(base_cache, last_pos, h), cache["twist"])
        return logits, out

    def __repr__(self) -> str:
        parts = [repr(self.base)]
        if self.proposal is not None:
            parts.append("proposal")
        if self.twist is not None:
            parts.append(f"twist={self.twist.kind}")
        return f"GuidedLM({', '.join(parts)})"
