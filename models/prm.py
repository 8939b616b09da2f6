"""A process reward model: a value head on a small decoder, read at the end of each step.

r(x_<=k) = sigmoid(w . h_t + b), the probability that the partial solution x_<=k (the prompt
with the question, then the first k steps, ending at token t) still leads to a right answer;
h_t is the decoder's final hidden state at t (after the final norm). Because attention is
causal, the score at t depends only on tokens 0..t: padding after t, and the other rows of a
batch, never change it.

Stored as a Hugging Face ``LlamaForTokenClassification`` checkpoint with ``num_labels = 1``
(``model.*`` decoder tensors, ``score.weight`` [1, hidden], ``score.bias`` [1]), so that
``transformers.AutoModelForTokenClassification.from_pretrained`` reads the same files; the
token logits at every position are then the ones :meth:`ProcessRewardModel.token_logits`
gives. The tokenizer is the policy's, so the PRM reads the policy's token buffer directly.

**Likelihood features** (optional; the bundled PRM has them). A PRM whose trunk is the policy's
own decoder, unchanged, can also read how likely the policy finds the solution: with a
``marker`` (the token ids that end the prompt, e.g. ``"\nA:"``), the logit gains
``u . f_t`` where f_t = (log p(x_t | x_<t), the least and the sum of log p(x_s | x_<s) over
the solution tokens s <= t after the last marker), all 0 before a marker. A misread amount of
the question is a token the policy finds unlikely (it read the question), so these features
carry most of the bundled PRM's skill (``models/bundled-prm/README.md``). They are stored as
``score.likelihood_weight`` [3] and ``genppl_solution_marker`` in ``config.json``;
transformers reads the rest of the checkpoint (and warns of that tensor), so its token logits
are then the hidden-state part alone.

:func:`ppl.PRMReward` and :func:`ppl.PRMFinalReward` turn it into a potential evaluated on
the device inside the compiled sweep.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .interface import InputError

__all__ = ["ProcessRewardModel", "HEAD_CLASS", "likelihood_features"]

#: The transformers class a PRM checkpoint names in ``config.json``.
HEAD_CLASS = "LlamaForTokenClassification"


@jax.tree_util.register_pytree_node_class
class ProcessRewardModel:
    """A decoder trunk plus a scalar head; its weights are the pytree's leaves.

    token_logits(tokens [n, T]) -> [n, T]: the reward logit after each token (positions 0..T-1).
    logits(tokens, length) -> [n]: the logit after the last of the first ``length`` tokens.
    rewards(tokens, length) -> [n]: sigmoid of :meth:`logits`, in (0, 1).

    ``tokenizer`` (a :class:`models.Tokenizer`, optional) is the one it reads; ``eos_id``
    ends a sequence (a trailing EOS is skipped when a potential reads the last step).
    """

    def __init__(self, graphdef, params, head, config, tokenizer=None, marker=None):
        self.graphdef, self.params, self.head = graphdef, params, head
        self.config, self.tokenizer = config, tokenizer
        self.marker = None if marker is None else tuple(int(t) for t in marker)
        if ("u" in head) != (self.marker is not None):
            raise InputError("a PRM with likelihood weights (head['u']) needs the solution marker, and one without "
                             "needs none: pass both or neither")
        self.vocab_size = config.vocab_size
        self.max_length = config.max_position_embeddings

    # ---- pytree ---------------------------------------------------------------------------
    def tree_flatten(self):
        return (self.params, self.head), (self.graphdef, self.config, self.tokenizer, self.marker)

    @classmethod
    def tree_unflatten(cls, aux, children):
        graphdef, config, tokenizer, marker = aux
        obj = object.__new__(cls)  # no validation: leaves may be tracers or placeholders
        obj.graphdef, obj.params, obj.head, obj.config, obj.tokenizer, obj.marker = (
            graphdef, children[0], children[1], config, tokenizer, marker)
        obj.vocab_size, obj.max_length = config.vocab_size, config.max_position_embeddings
        return obj

    # ---- building, loading, saving ----------------------------------------------------------
    @classmethod
    def from_decoder(cls, decoder, config, tokenizer=None, key=0, marker=None) -> "ProcessRewardModel":
        """A PRM whose trunk is ``decoder`` (e.g. a copy of the policy's) and a fresh head
        (normal(0, 0.02) weights, bias 0); with ``marker`` (token ids ending the prompt), also
        likelihood weights, 0 (see the module docstring)."""
        graphdef, params = nnx.split(decoder)
        w = jax.random.normal(jax.random.key(key), (config.hidden_size,), jnp.float32) * 0.02
        head = {"w": w, "b": jnp.zeros((), jnp.float32)}
        if marker is not None:
            if not len(marker):
                raise InputError("the solution marker must hold at least one token id")
            head["u"] = jnp.zeros((N_LIKELIHOOD_FEATURES,), jnp.float32)
        return cls(graphdef, params, head, config, tokenizer, marker)

    @classmethod
    def from_pretrained(cls, path) -> "ProcessRewardModel":
        """Load a ``LlamaForTokenClassification`` checkpoint with one label (see the module
        docstring); the tokenizer files in the directory are read when present. A directory
        that is not such a checkpoint raises :class:`CheckpointError` saying so."""
        from .architectures import ArchConfig, CheckpointError, load_checkpoint
        from .architectures.checkpoint import read_json
        from .tokenizer import Tokenizer

        path = Path(path).expanduser()
        if not (path / "config.json").exists():
            raise CheckpointError(f"{path} has no config.json: point at a process reward model directory "
                                  "(a LlamaForTokenClassification checkpoint with num_labels = 1)")
        raw = read_json(path / "config.json", "re-save the PRM with ProcessRewardModel.save(path)")
        archs = raw.get("architectures") or []
        labels = raw.get("num_labels", len(raw.get("id2label") or {}) or None)
        if archs != [HEAD_CLASS] or labels != 1:
            raise CheckpointError(f"{path} is not a process reward model: config.json must name architectures "
                                  f"[{HEAD_CLASS!r}] with num_labels 1 (it names {archs}, num_labels {labels})")
        probe = ArchConfig.from_hf(raw)
        hidden = probe.hidden_size
        marker = raw.get(MARKER_FIELD)
        extra = {"score.weight": (1, hidden), "score.bias": (1,)}
        if marker is not None:
            extra["score.likelihood_weight"] = (N_LIKELIHOOD_FEATURES,)
        decoder, config, heads = load_checkpoint(path, jnp.float32, extra=extra)
        tokenizer = Tokenizer.from_pretrained(path, vocab_size=config.vocab_size) \
            if (path / "tokenizer.json").exists() else None
        graphdef, params = nnx.split(decoder)
        head = {"w": heads["score.weight"][0], "b": heads["score.bias"][0]}
        if marker is not None:
            head["u"] = heads["score.likelihood_weight"]
        return cls(graphdef, params, head, config, tokenizer, marker)

    def save(self, path) -> Path:
        """Write the checkpoint (and the tokenizer, when it has one) to ``path``."""
        from .architectures import save_checkpoint

        path = Path(path).expanduser()
        decoder = nnx.merge(self.graphdef, self.params)
        extra = {"score.weight": jnp.reshape(self.head["w"], (1, -1)), "score.bias": jnp.reshape(self.head["b"], (1,))}
        fields = {"num_labels": 1, "id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}, "classifier_dropout": 0.0}
        if self.marker is not None:
            extra["score.likelihood_weight"] = self.head["u"]
            fields[MARKER_FIELD] = list(self.marker)
        save_checkpoint(decoder, self.config, path, extra=extra, architecture=HEAD_CLASS, config_fields=fields)
        if self.tokenizer is not None and getattr(self.tokenizer, "hf", None) is not None:
            self.tokenizer.hf.save_pretrained(str(path))
        return path

    # ---- scoring --------------------------------------------------------------------------
    def _check_tokens(self, tokens):
        if not isinstance(tokens, jax.core.Tracer):
            tokens = np.asarray(tokens)
            if tokens.dtype.kind not in "iu":
                raise InputError(f"the PRM reads token ids (integers), got dtype {tokens.dtype}")
            if tokens.size and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
                raise InputError(f"token ids must lie in [0, {self.vocab_size}) (the PRM's vocabulary); got ids in "
                                 f"[{tokens.min()}, {tokens.max()}]: use the tokenizer the PRM was trained with")
        if jnp.ndim(tokens) != 2:
            raise InputError(f"tokens must be [n, T] (one row per sequence), got shape {jnp.shape(tokens)}")
        if jnp.shape(tokens)[1] > self.max_length:
            raise InputError(f"sequences of {jnp.shape(tokens)[1]} tokens exceed the PRM's {self.max_length} "
                             "positions: shorten the prompt or max_new_tokens")
        return jnp.asarray(tokens, jnp.int32)

    def token_logits(self, tokens) -> jax.Array:
        """[n, T] reward logits after each token of ``tokens`` [n, T] (int ids)."""
        tokens = self._check_tokens(tokens)
        if isinstance(tokens, jax.core.Tracer):
            return self.forward(tokens)
        return _forward(self, tokens)  # called eagerly: one compiled forward pass per shape

    def forward(self, tokens) -> jax.Array:
        """:meth:`token_logits` without validation (traceable)."""
        positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
        lm_logits, _, hidden = nnx.merge(self.graphdef, self.params)(tokens, positions, None, return_hidden=True)
        out = jnp.einsum("btd,d->bt", hidden.astype(jnp.float32), self.head["w"]) + self.head["b"]
        if self.marker is not None:
            out = out + jnp.einsum("btf,f->bt", likelihood_features(lm_logits, tokens, self.marker), self.head["u"])
        return out

    def logits(self, tokens, length) -> jax.Array:
        """[n] reward logit of each row's first ``length[i]`` tokens (read after token
        ``length[i] - 1``; entries past it are ignored)."""
        tokens = self._check_tokens(tokens)
        length = self._check_length(length, tokens)
        # only positions < max(length) matter; the forward pass runs on the whole buffer (static shape)
        rows = self.token_logits(tokens)
        return jnp.take_along_axis(rows, jnp.maximum(length - 1, 0)[:, None], 1)[:, 0]

    def rewards(self, tokens, length) -> jax.Array:
        """[n] rewards in (0, 1): ``sigmoid(logits(tokens, length))``."""
        return jax.nn.sigmoid(self.logits(tokens, length))

    def _check_length(self, length, tokens):
        n, t = tokens.shape
        if not isinstance(length, jax.core.Tracer):
            arr = np.asarray(length)
            if arr.shape != (n,) or arr.dtype.kind not in "iu":
                raise InputError(f"length must be {n} integers (one per row), got {arr!r}")
            if arr.size and (arr.min() < 1 or arr.max() > t):
                raise InputError(f"each length must lie in [1, {t}] (at least one token, at most the row), got {arr}")
        return jnp.asarray(length, jnp.int32)

    def score_texts(self, prefix_ids, texts, tokenizer=None) -> np.ndarray:
        """Host helper: rewards of ``prefix_ids + encode(text)`` for each text (e.g. the BOS +
        question prompt and each partial solution), in one padded batch."""
        tokenizer = tokenizer or self.tokenizer
        if tokenizer is None:
            raise InputError("score_texts needs a tokenizer: pass the policy's (lm.tokenizer)")
        if isinstance(texts, str):
            raise InputError("texts must be a list of strings (one per candidate), got one string")
        rows = [list(prefix_ids) + list(tokenizer.encode(t)) for t in texts]
        if not rows:
            return np.zeros((0,), np.float32)
        # padded to a multiple of 32 tokens (never past max_length): candidates of similar
        # lengths share one compiled forward pass; padding after a row is never read
        width = max(map(len, rows))
        width = max(width, min(-(-width // 32) * 32, self.max_length))
        tokens = np.zeros((len(rows), width), np.int32)
        for i, r in enumerate(rows):
            tokens[i, :len(r)] = r
        return np.asarray(self.rewards(tokens, np.array([len(r) for r in rows], np.int32)))

    # ---- incremental scoring (inside a compiled sweep) -------------------------------------
    #: tokens fed per forward pass when the PRM's own state catches up with a sequence
    CHUNK = 8

    def start(self, tokens, prompt_length, n: int) -> dict:
        """The PRM's own state for ``n`` rows after a prompt (traceable): ``tokens`` [C] holds
        the prompt in its first ``prompt_length`` entries (C, the buffer capacity, is static).

        The state keeps a KV cache of C positions per row, the number of tokens read, the
        trunk's logits after the last of them, the likelihood features' running minimum and
        sum since the last marker, and ``value``: the reward logit after the last token read.
        :meth:`catch_up` then reads only the new tokens of each row, so that scoring every
        step of a sequence costs one pass over its tokens, not one pass per step over the
        whole buffer; the value equals :meth:`logits` of the same tokens (up to float rounding).
        """
        from .architectures.decoder import init_cache

        cap = tokens.shape[0]
        length = jnp.asarray(prompt_length, jnp.int32)
        row = jnp.where(jnp.arange(cap) < length, jnp.asarray(tokens, jnp.int32), 0)[None]
        dtype = jax.tree.leaves(self.params)[0].dtype
        cache = init_cache(self.config, 1, cap, dtype)
        positions = jnp.arange(cap, dtype=jnp.int32)[None]
        lm_logits, cache, hidden = nnx.merge(self.graphdef, self.params)(row, positions, cache, return_hidden=True)
        at = jnp.maximum(length - 1, 0)
        value = jnp.dot(hidden[0, at].astype(jnp.float32), self.head["w"]) + self.head["b"]
        seen, low, total = jnp.zeros((), bool), jnp.float32(0.0), jnp.float32(0.0)
        if self.marker is not None:
            features = likelihood_features(lm_logits, row, self.marker)[0, at]
            value = value + jnp.dot(features, self.head["u"])
            seen = jnp.any(_marker_ends(row, jnp.arange(cap)[None], self.marker)[0] & (jnp.arange(cap) <= at))
            low, total = features[1], features[2]
        one = {"cache": cache, "length": length[None], "logits": lm_logits[0, at][None].astype(jnp.float32),
               "seen": seen[None], "low": low[None], "total": total[None], "value": value[None]}
        return jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape[1:]), one)

    def catch_up(self, state: dict, tokens, target) -> dict:
        """Read each row's tokens ``[state["length"], target)`` of ``tokens`` [n, C] (the
        sequences' buffer) in chunks of :attr:`CHUNK`; ``state["value"]`` is then the reward
        logit after token ``target - 1`` (rows already there are unchanged). Traceable."""
        module = nnx.merge(self.graphdef, self.params)
        n, cap = tokens.shape
        target = jnp.minimum(jnp.asarray(target, jnp.int32), cap)
        offsets = jnp.arange(self.CHUNK, dtype=jnp.int32)[None]

        def behind(s):
            return jnp.any(s["length"] < target)

        def read(s):
            pos = s["length"][:, None] + offsets  # [n, CHUNK]
            real = pos < target[:, None]
            chunk = jnp.where(real, jnp.take_along_axis(tokens, jnp.minimum(pos, cap - 1), 1), 0)
            # positions past a row's target write junk that no later query reads (causal mask),
            # and positions past the capacity are dropped
            lm_logits, cache, hidden = module(chunk, pos, s["cache"], return_hidden=True)
            logit = jnp.einsum("bcd,d->bc", hidden.astype(jnp.float32), self.head["w"]) + self.head["b"]
            carry = (s["seen"], s["low"], s["total"])
            if self.marker is not None:
                before = jnp.concatenate([s["logits"][:, None], lm_logits[:, :-1]], 1)
                logp = jnp.take_along_axis(jax.nn.log_softmax(before, -1), chunk[..., None], -1)[..., 0]
                hits = _marker_ends(tokens, pos, self.marker)
                features = []
                for c in range(self.CHUNK):  # the running minimum and sum, restarted at each marker
                    seen, low, total = carry
                    hit, inside = hits[:, c], carry[0] & ~hits[:, c]
                    lp = jnp.where(inside, logp[:, c], 0.0)
                    new = (seen | hit, jnp.where(hit, 0.0, jnp.minimum(low, lp)), jnp.where(hit, 0.0, total + lp))
                    carry = tuple(jnp.where(real[:, c], a, b) for a, b in zip(new, carry))
                    features.append(jnp.stack([lp, carry[1], carry[2]], -1))
                logit = logit + jnp.einsum("bcf,f->bc", jnp.stack(features, 1), self.head["u"])
            count = real.sum(1)
            last = jnp.maximum(count - 1, 0)[:, None]
            moved = count > 0
            return {"cache": cache, "length": s["length"] + count,
                    "logits": jnp.where(moved[:, None], jnp.take_along_axis(lm_logits, last[..., None], 1)[:, 0],
                                        s["logits"]),
                    "seen": carry[0], "low": carry[1], "total": carry[2],
                    "value": jnp.where(moved, jnp.take_along_axis(logit, last, 1)[:, 0], s["value"])}

        return jax.lax.while_loop(behind, read, state)

    def __repr__(self) -> str:
        c = self.config
        return f"ProcessRewardModel({c.model_type}, layers={c.num_layers}, hidden={c.hidden_size}, vocab={c.vocab_size})"



_forward = jax.jit(ProcessRewardModel.forward)

#: (this token's log-prob, the least and the sum of the solution's log-probs so far)
N_LIKELIHOOD_FEATURES = 3
#: the config.json field holding the solution marker's token ids
MARKER_FIELD = "genppl_solution_marker"


def _marker_ends(tokens, positions, marker) -> jax.Array:
    """[n, L] bool: the marker's last token is at ``positions`` [n, L] of ``tokens`` [n, C]."""
    m, cap = len(marker), tokens.shape[1]
    hit = positions >= m - 1
    for j, tok in enumerate(marker):
        at = jnp.clip(positions - (m - 1) + j, 0, cap - 1)
        hit = hit & (jnp.take_along_axis(tokens, at, 1) == tok)
    return hit


def likelihood_features(lm_logits, tokens, marker) -> jax.Array:
    """[n, T, 3] likelihood features (see the module docstring) from the trunk's next-token
    logits [n, T, V]; causal: position t reads tokens 0..t only."""
    n, t = tokens.shape
    logp = jax.nn.log_softmax(lm_logits[:, :-1].astype(jnp.float32), -1)
    logp = jnp.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0]
    logp = jnp.concatenate([jnp.zeros((n, 1), jnp.float32), logp], 1)  # the first token: nothing predicts it
    m = len(marker)
    hit = jnp.zeros((n, t), bool)
    if t >= m:  # hit[:, i]: the marker ends at token i
        ends = jnp.ones((n, t - m + 1), bool)
        for j, tok in enumerate(marker):
            ends = ends & (tokens[:, j:t - m + 1 + j] == tok)
        hit = hit.at[:, m - 1:].set(ends)
    idx = jnp.arange(t)
    start = jax.lax.cummax(jnp.where(hit, idx, -1), axis=1)  # the last marker's end at or before t
    inside = (idx > start) & (start >= 0)
    lp = jnp.where(inside, logp, 0.0)
    csum = jnp.cumsum(lp, 1)
    total = csum - jnp.where(start >= 0, jnp.take_along_axis(csum, jnp.maximum(start, 0), 1), 0.0)

    def least(a, b):  # running min that restarts at every marker
        (ra, va), (rb, vb) = a, b
        return ra | rb, jnp.where(rb, vb, jnp.minimum(va, vb))

    _, low = jax.lax.associative_scan(least, (hit, lp), axis=1)
    return jnp.stack([lp, low, total], -1)
