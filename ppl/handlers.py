"""Effect-handler programs: write one token step of the model as a Python function.

A step function is called with a :class:`StepContext` (the particles' current state,
vectorised over particles) and uses numpyro's primitives through thin wrappers::

    def step(ctx):
        tok = ppl.sample("tok", ctx.next_token())           # the next token, from the LM
        ppl.condition(~ctx.token_has("e", tok))              # hard constraint (0 / -inf)
        ppl.factor("short", jnp.where(ctx.is_eos(tok), 0.0, -0.1))   # soft score
        ppl.observe("y", dist.Normal(score(ctx, tok), 1.0), 2.0)     # a likelihood term

    def finish(ctx):                                         # optional: on each finished x
        ppl.condition(ctx.num_generated >= 3)

    program = ppl.EffectProgram(step, lm, prompt_ids, max_new_tokens=8, finish=finish)

How it runs (:class:`HandlerPotential`, a token-level :class:`ppl.Potential`):

* ``logw_next`` runs the step function once per candidate token: ``jax.vmap`` over the
  vocabulary, the token site's value set to the candidate by ``numpyro.handlers.substitute``
  and every site recorded by ``numpyro.handlers.trace``. Inside the step function ``tok``
  always has shape [n] (one token per particle), as if it had been sampled. The recorded
  observed sites (``factor``, ``condition``, ``observe``) are summed into the increment
  [n, V]. The EOS column is the increment of finishing there: the step's terms at
  ``tok = EOS`` plus the ``finish`` terms on the sequence without EOS; ``logw_cap`` runs
  ``finish`` on a sequence cut at the length cap. So the program IS a token-level potential:
  every kernel runs it unchanged, the locally optimal proposal included.
* :meth:`HandlerPotential.simulate` is the bootstrap view: ``numpyro.handlers.seed`` and
  ``trace`` run the step function once on the batch, the token site samples from its
  distribution, and the summed terms at the sampled token are its incremental weight
  (equal to ``logw_next`` at that token; a custom kernel may use it when the step function
  is too costly to evaluate for every candidate).

What a step function may contain:

* exactly one latent ``sample`` site, the token (the first unobserved sample site, or the
  site named ``token_site``). With ``ctx.next_token()`` as its distribution it adds nothing
  (the program supplies the LM's ``alpha * log p``). With another distribution q over the
  vocabulary it adds ``log q(v) - log p_LM(v)``: at ``alpha = 1`` the step's q replaces the
  LM's next-token law in the target (tokens the LM rules out stay ruled out);
* any number of ``factor`` / ``condition`` / ``observe`` sites whose log-weights are
  scalars or shape [n]; they may depend on ``tok`` in any traceable way;
* a carried per-particle state (optional): give ``init_state`` (a pytree for ONE particle),
  read ``ctx.state`` (leaves lead with n) and assign ``ctx.state = new`` in the step; the
  update is computed once the token is chosen (the step is re-run at that token).

Not supported: latent variables other than the token (marginalise them, or ``observe``
them), plates that give a site more than one value per particle.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.primitives import Messenger

from genppl.models.interface import InputError, LanguageModel

from .potential import Potential
from .program import Program

__all__ = ["sample", "observe", "factor", "condition", "StepContext", "NextToken",
           "HandlerPotential", "EffectProgram"]


# ---- primitives (thin wrappers over numpyro's) ---------------------------------------------
def sample(name: str, fn, obs=None):
    """``numpyro.sample``: a random choice (the next token in a step function)."""
    _check_name(name, "sample")
    return numpyro.sample(name, fn, obs=obs)


def observe(name: str, fn, value):
    """Condition on ``value`` observed from ``fn``: adds ``fn.log_prob(value)`` to the weight."""
    _check_name(name, "observe")
    if value is None:
        raise InputError(f"observe({name!r}, ...) needs the observed value")
    return numpyro.sample(name, fn, obs=value)


def factor(name: str, log_weight) -> None:
    """Add ``log_weight`` (a scalar or one value per particle; -inf rules out) to the weight."""
    _check_name(name, "factor")
    numpyro.factor(name, jnp.asarray(log_weight, jnp.float32))


def condition(name_or_pred, pred=None) -> None:
    """Hard constraint: ``condition(pred)`` or ``condition(name, pred)`` adds 0 where ``pred``
    holds and -inf elsewhere (``pred`` boolean, a scalar or one value per particle)."""
    auto = pred is None
    if auto:
        name, pred = "_condition", name_or_pred  # numbered by the AutoName handler of the run
    else:
        name = name_or_pred
        _check_name(name, "condition")
    pred = jnp.asarray(pred)
    if pred.dtype != jnp.bool_:
        raise InputError(f"condition({name!r}, pred) needs a boolean pred, got dtype {pred.dtype}; "
                         "use factor(name, log_weight) for a soft score")
    unit = dist.Unit(jnp.where(pred, 0.0, -jnp.inf).astype(jnp.float32))
    numpyro.sample(name, unit, obs=unit.sample(None), infer={"is_auxiliary": True, "auto_name": auto})


def _check_name(name, what):
    if not isinstance(name, str) or not name:
        raise InputError(f"{what} needs a site name (a non-empty string) first, got {name!r}")


class AutoName(Messenger):
    """Numbers the unnamed conditions of one run of a step function (``_condition_0``, ...):
    a handler scoped to the run, so names never depend on earlier runs."""

    def __init__(self, fn=None):
        self.count = 0
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] == "sample" and (msg.get("infer") or {}).get("auto_name"):
            msg["name"] = f"{msg['name']}_{self.count}"
            self.count += 1


# ---- the context a step function sees ------------------------------------------------------
class NextToken(dist.CategoricalLogits):
    """The LM's next-token distribution (what :meth:`StepContext.next_token` returns).

    A token site with this distribution adds no weight: the program supplies the LM term.
    Its logits may hold -inf (tokens the LM rules out), so argument validation is off.
    """

    def __init__(self, logits, *, validate_args=None):
        super().__init__(logits, validate_args=False)


class StepContext:
    """What a step (or finish) function sees: the particles' current prefixes, vectorised.

    Arrays lead with the particle axis n. ``lm_state`` is the :class:`models.LMState` of the
    prefixes (before the token of this step).
    """

    def __init__(self, owner: "HandlerPotential", lm_state, carry=None):
        self._owner = owner
        self.lm_state = lm_state
        self._state = carry

    # LM state
    @property
    def tokens(self) -> jax.Array:
        """[n, T] the prompt and generated tokens (entries past ``length`` unspecified)."""
        return self.lm_state.tokens

    @property
    def length(self) -> jax.Array:
        return self.lm_state.length

    @property
    def prompt_length(self) -> jax.Array:
        return self.lm_state.prompt_length

    @property
    def num_generated(self) -> jax.Array:
        """[n] tokens generated so far (EOS not included: it ends the sequence)."""
        return self.lm_state.num_generated

    @property
    def last_token(self) -> jax.Array:
        """[n] the last token of each prefix (the prompt's last before any generation)."""
        return jnp.take_along_axis(self.tokens, (self.length - 1)[:, None], 1)[:, 0]

    @property
    def logits(self) -> jax.Array:
        return self.lm_state.logits

    @property
    def log_probs(self) -> jax.Array:
        """[n, V] the LM's next-token log-probabilities."""
        return jax.nn.log_softmax(self.lm_state.logits.astype(jnp.float32), -1)

    @property
    def num_particles(self) -> int:
        return self.lm_state.tokens.shape[0]

    @property
    def vocab_size(self) -> int:
        return self.lm_state.logits.shape[-1]

    @property
    def eos_id(self) -> int:
        return self._owner.eos_id

    @property
    def tokenizer(self):
        return self._owner.tokenizer

    # helpers
    def next_token(self) -> NextToken:
        """The LM's next-token distribution (a numpyro Categorical over the vocabulary)."""
        return NextToken(self.lm_state.logits)

    def is_eos(self, tok) -> jax.Array:
        return jnp.asarray(tok) == self.eos_id

    def token_has(self, text: str, tok) -> jax.Array:
        """Whether token ``tok``'s bytes contain ``text`` (a lookup in a [V] table)."""
        return self._owner.contains_table(text)[jnp.asarray(tok)]

    # carried state
    @property
    def state(self):
        """The carried per-particle state (leaves lead with n); assign to update it."""
        if self._owner.init_state is None:
            raise InputError("this program carries no state: give init_state=... (a pytree for one "
                             "particle) to use ctx.state")
        return self._state

    @state.setter
    def state(self, value):
        if self._owner.init_state is None:
            raise InputError("this program carries no state: give init_state=... (a pytree for one "
                             "particle) to assign ctx.state")
        self._state = value


# ---- the adapter: a step function as a token-level potential -------------------------------
class HandlerPotential(Potential):
    """A step function (and optional ``finish`` function) as a token-level potential.

    step_fn(ctx): one token step (see the module docstring); finish(ctx): terms on each
    finished sequence (EOS excluded), optional. tokenizer: the LM's tokenizer, or the LM
    itself (gives ``ctx.token_has`` and the EOS id). init_state: a pytree for one particle
    to carry through the steps (``ctx.state``), or None. token_site: the token site's name
    (default: the first unobserved sample site). vocab_batch_size: evaluate the candidates
    in chunks of this many tokens (``lax.map``) instead of all at once (``vmap``), to bound
    memory with large vocabularies.
    """

    token_level = True
    static_exclude = ("_tables",)

    def __init__(self, step_fn, tokenizer, finish=None, init_state=None, token_site: str | None = None,
                 vocab_batch_size: int | None = None, eos_id: int | None = None):
        if not callable(step_fn):
            raise InputError(f"step_fn must be a function of the step context, got {type(step_fn).__name__}")
        if finish is not None and not callable(finish):
            raise InputError(f"finish must be a function of the step context or None, got {type(finish).__name__}")
        if isinstance(tokenizer, LanguageModel):
            eos_id = tokenizer.eos_id if eos_id is None else eos_id
            tokenizer = tokenizer.tokenizer
        if eos_id is None:
            eos_id = getattr(tokenizer, "eos_id", None)
        if isinstance(eos_id, bool) or not isinstance(eos_id, numbers.Integral) or eos_id < 0:
            raise InputError("HandlerPotential needs the EOS id: pass the LM (or a tokenizer with "
                             f".eos_id) or eos_id=...; got {eos_id!r}")
        if token_site is not None and (not isinstance(token_site, str) or not token_site):
            raise InputError(f"token_site must be a site name, got {token_site!r}")
        if vocab_batch_size is not None and (isinstance(vocab_batch_size, bool) or not isinstance(
                vocab_batch_size, numbers.Integral) or vocab_batch_size <= 0):
            raise InputError(f"vocab_batch_size must be a positive integer or None, got {vocab_batch_size!r}")
        self.step_fn, self.finish = step_fn, finish
        self.tokenizer, self.eos_id = tokenizer, int(eos_id)
        self.init_state, self.token_site = init_state, token_site
        self.vocab_batch_size = vocab_batch_size

    # ---- helpers the context uses -------------------------------------------------------
    def contains_table(self, text: str) -> jax.Array:
        """[V] bool: whether each token's bytes contain ``text`` (cached per text)."""
        if not isinstance(text, str) or not text:
            raise InputError(f"token_has needs a non-empty string, got {text!r}")
        tables = self.__dict__.setdefault("_tables", {})  # host-side cache, not part of the pytree
        if text not in tables:
            token_bytes = getattr(self.tokenizer, "token_bytes", None)
            if token_bytes is None:
                raise InputError("ctx.token_has needs a tokenizer with .token_bytes (e.g. lm.tokenizer)")
            needle = text.encode("utf-8")
            tables[text] = np.array([needle in b for b in token_bytes], bool)
        return jnp.asarray(tables[text])

    # ---- running the user's functions under numpyro's handlers --------------------------
    def _trace(self, fn, ctx, tok=None, key=None, role="step"):
        """Run fn(ctx) under handlers; return (trace, token site name or None)."""
        claimed: list[str] = []

        def token_value(msg):
            if msg["type"] != "sample" or msg["is_observed"]:
                return None
            if role == "step" and not claimed and self.token_site in (None, msg["name"]):
                claimed.append(msg["name"])
                return tok  # None in simulate mode: the seed handler draws it
            what = "the finish function may not sample" if role == "finish" else \
                "only the token may be sampled in a step function"
            raise InputError(f"{what}: site {msg['name']!r} is an unobserved sample site. Latent "
                             "variables other than the token are not supported; marginalise them, "
                             "use observe(name, dist, value), or factor(name, log_weight)"
                             + (f" (the token site is named {self.token_site!r})" if self.token_site else ""))

        model = AutoName(handlers.substitute(lambda: fn(ctx), substitute_fn=token_value))
        if key is not None:
            model = handlers.seed(model, rng_seed=key)
        tr = handlers.trace(model).get_trace()
        if role == "step" and not claimed:
            if self.token_site is not None:
                raise InputError(f"the step function has no sample site named {self.token_site!r} "
                                 "(token_site): sample the next token under that name")
            raise InputError("the step function must sample the next token, e.g. "
                             "tok = ppl.sample('tok', ctx.next_token())")
        return tr, (claimed[0] if claimed else None)

    def _log_weight(self, tr, token_name, ctx) -> jax.Array:
        """Sum of the recorded terms [n] (the token site's only if it is not the LM's)."""
        n = ctx.num_particles
        total = jnp.zeros((n,), jnp.float32)
        for name, site in tr.items():
            if site["type"] != "sample":
                continue
            if name == token_name:
                if isinstance(site["fn"], NextToken):
                    continue
                value = jnp.broadcast_to(jnp.asarray(site["value"], jnp.int32), (n,))
                lq = _per_particle(site["fn"].log_prob(value), n, name)
                lp = jnp.take_along_axis(ctx.log_probs, value[:, None], 1)[:, 0]
                total = total + jnp.where(jnp.isneginf(lp) | jnp.isneginf(lq), -jnp.inf, lq - lp)
                continue
            lw = site["fn"].log_prob(site["value"])
            if site.get("scale") is not None:
                lw = jnp.where(jnp.isneginf(lw), -jnp.inf, site["scale"] * lw)
            total = total + _per_particle(lw, n, name)
        return total

    def _step_logw(self, lm_state, carry, tok):
        ctx = StepContext(self, lm_state, carry)
        tr, name = self._trace(self.step_fn, ctx, tok=tok)
        return self._log_weight(tr, name, ctx)

    def _finish_logw(self, lm_state, carry):
        ctx = StepContext(self, lm_state, carry)
        tr, _ = self._trace(self.finish, ctx, role="finish")
        return self._log_weight(tr, None, ctx)

    # ---- Potential ----------------------------------------------------------------------
    def init(self, lm_state):
        if self.init_state is None:
            return ()
        n = lm_state.length.shape[0]

        def one(leaf):
            leaf = jnp.asarray(leaf)
            return jnp.broadcast_to(leaf.astype(leaf.dtype), (n, *leaf.shape))

        return {"carry": jax.tree.map(one, self.init_state), "logits": lm_state.logits}

    @staticmethod
    def _carry(pstate):
        return pstate["carry"] if isinstance(pstate, dict) else None

    def logw_next(self, pstate, lm_state):
        n, V = lm_state.logits.shape
        carry = self._carry(pstate)

        def for_token(v):
            return self._step_logw(lm_state, carry, jnp.full((n,), v, jnp.int32))

        candidates = jnp.arange(V, dtype=jnp.int32)
        if self.vocab_batch_size is None:
            logw = jax.vmap(for_token)(candidates)
        else:
            logw = jax.lax.map(for_token, candidates, batch_size=min(self.vocab_batch_size, V))
        logw = logw.T
        if self.finish is not None:
            logw = logw.at[:, self.eos_id].add(self._finish_logw(lm_state, carry))
        return logw

    def update(self, pstate, lm_state, token):
        if self.init_state is None:
            return pstate
        # the step function's view: the prefix before ``token`` (its logits were kept)
        before = lm_state.replace(length=lm_state.length - 1, logits=pstate["logits"])
        ctx = StepContext(self, before, pstate["carry"])
        self._trace(self.step_fn, ctx, tok=jnp.asarray(token, jnp.int32))
        return {"carry": _same_structure(ctx._state, pstate["carry"]), "logits": lm_state.logits}

    def logw_cap(self, pstate, lm_state):
        if self.finish is None:
            return jnp.zeros(lm_state.length.shape, jnp.float32)
        return self._finish_logw(lm_state, self._carry(pstate))

    # ---- the bootstrap view -------------------------------------------------------------
    def simulate(self, key, pstate, lm_state):
        """Run the step function once on the batch with ``numpyro.handlers.seed``: the token
        site draws from its own distribution. Returns (token [n], log-weight [n], log q [n]):
        the log-weight is the sum of the recorded terms at the drawn token (``finish`` terms
        included where it is EOS), i.e. ``logw_next`` at that token; log q is the token
        site's log-probability of the draw (the proposal's, for a bootstrap kernel)."""
        carry = self._carry(pstate)
        ctx = StepContext(self, lm_state, carry)
        tr, name = self._trace(self.step_fn, ctx, key=key)
        n = ctx.num_particles
        token = jnp.broadcast_to(jnp.asarray(tr[name]["value"], jnp.int32), (n,))
        logw = self._log_weight(tr, name, ctx)
        if self.finish is not None:
            logw = logw + jnp.where(token == self.eos_id, self._finish_logw(lm_state, carry), 0.0)
        log_q = _per_particle(tr[name]["fn"].log_prob(token), n, name)
        return token, logw, log_q

    def __repr__(self) -> str:
        name = getattr(self.step_fn, "__qualname__", type(self.step_fn).__name__)
        return f"HandlerPotential({name}{', finish' if self.finish is not None else ''})"


class EffectProgram(Program):
    """A :class:`ppl.Program` whose potential is a step function (a :class:`HandlerPotential`).

    ``EffectProgram(step_fn, lm, prompt_ids, max_new_tokens, finish=None, init_state=None,
    potential=None, token_site=None, vocab_batch_size=None, alpha=1.0, step_delimiter=None,
    stop=None)``: ``potential`` (optional) is multiplied in, e.g. a
    :class:`ppl.HostScorer`. Every kernel that runs a Program runs it.
    """

    def __init__(self, step_fn, lm, prompt_ids, max_new_tokens: int, finish=None, init_state=None,
                 potential: Potential | None = None, token_site: str | None = None,
                 vocab_batch_size: int | None = None, **program_kwargs):
        if not isinstance(lm, LanguageModel):
            raise InputError(f"lm must be a models.LanguageModel, got {type(lm).__name__}")
        handler = HandlerPotential(step_fn, lm, finish=finish, init_state=init_state,
                                   token_site=token_site, vocab_batch_size=vocab_batch_size)
        if potential is not None:
            if not isinstance(potential, Potential):
                raise InputError(f"potential must be a ppl.Potential, got {type(potential).__name__}")
            handler = handler * potential
        super().__init__(lm, prompt_ids, max_new_tokens, potential=handler, **program_kwargs)


def _per_particle(logw, n: int, name: str) -> jax.Array:
    logw = jnp.asarray(logw, jnp.float32)
    if logw.ndim > 1 or (logw.ndim == 1 and logw.shape[0] not in (1, n)):
        raise InputError(f"site {name!r} gives log-weights of shape {logw.shape}; a site must give "
                         f"one value per particle, shape ({n},), or a scalar: sum extra axes or use "
                         "a distribution's .to_event(...)")
    return jnp.broadcast_to(logw, (n,))


def _same_structure(new, old):
    """The updated carried state, checked against the old one and cast to its dtypes."""
    if jax.tree.structure(new) != jax.tree.structure(old):
        raise InputError("ctx.state must keep its structure: assigned "
                         f"{jax.tree.structure(new)}, carried {jax.tree.structure(old)}")

    def cast(a, b):
        a = jnp.asarray(a)
        if a.shape != b.shape:
            raise InputError(f"ctx.state leaves must keep their shapes (particles first): assigned "
                             f"{a.shape}, carried {b.shape}")
        return a.astype(b.dtype)

    return jax.tree.map(cast, new, old)
