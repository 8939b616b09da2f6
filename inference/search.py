"""Search baselines as kernels over a :class:`ppl.Program`, with SMC's results interface.

The program's target is gamma(x) = p(x)^alpha phi(x). These are *not* samplers of pi; they
are the baselines SMC is compared with, so they return an :class:`SearchResult` (an
:class:`inference.smc.SMCResult`: texts, token ids, log-weights, ``best()``, ``vote()``,
displays) plus the candidates' ``scores``, the ``selected`` index and ``tokens`` spent.

* :func:`best_of_n` — N candidates x_i ~ q (the proposal; the default, the LM itself, is plain
  sampling), scored by s_i = ``reward(text_i)`` (any host-side function: a verifier, a reward
  model) or, without a reward, by the importance weight log w_i = log gamma(x_i) - log q(x_i).
  ``select="argmax"`` returns the top score (ties: the first); ``select="weighted"`` draws
  i with probability ∝ exp(s_i / temperature) (with s = log w and temperature 1: sampling
  importance resampling, whose log Z estimate log (1/N) sum_i w_i is then reported).
  Law of the argmax pick, for candidates i.i.d. from q with distinct scores:
  P(pick = x) = Q(s <= s(x))^N - Q(s < s(x))^N.
* :func:`beam_search` — token level: every beam is extended by every token, the ``width``
  prefixes with the largest log gamma_t (the program's increments with proposal-free target
  weights: alpha log p + potentials) are kept, finished beams compete with their final score;
  with width >= V^T this keeps every prefix, so the result is the exhaustive argmax of gamma.
  Step level (``expansions`` = K): each beam draws K next steps from the proposal and the
  ``width`` best of the width * K candidates by log gamma_t (which includes step rewards of
  :class:`ppl.StepReward` potentials) are kept.
* :func:`self_consistency` — N samples from q and a majority vote over ``extract(text)``
  (unweighted: the answer most samples agree on).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from genppl.models.batch import Batch, any_prompt, where_prompt
from genppl.models.interface import map_particles, InputError, as_key, check_positive_int
from genppl.ppl.batch import as_program, host_slice, map_prompts, prompt_keys, unstack
from genppl.ppl.program import Program
from genppl.ppl.proposals import prior

from .smc.kernel import build_kernel, init, sweep
from .smc.replay import Guided
from .smc.results import SMCResult

__all__ = ["SearchResult", "TargetScored", "beam_search", "best_of_n", "self_consistency"]


@dataclasses.dataclass(repr=False)
class SearchResult(SMCResult):
    """An :class:`SMCResult` of a search baseline. ``log_weights``: the selection weights
    (argmax: 0 at the pick, -inf elsewhere; weighted: the scores / temperature; beam: the
    beams' log gamma); ``scores``: each candidate's score; ``selected``: the index picked;
    ``tokens``: LM transitions spent; ``answer`` / ``votes``: of :func:`self_consistency`."""

    scores: np.ndarray | None = None
    selected: int | None = None
    tokens: int = 0
    answer: object = None
    votes: dict | None = None

    @property
    def selected_text(self) -> str | None:
        return None if self.selected is None else self.texts[self.selected]

    def __repr__(self) -> str:
        pick = "" if self.selected is None else f", selected #{self.selected}"
        log_z = "" if not math.isfinite(self.log_z) else f", log Z = {self.log_z:.4f}"
        answer = "" if self.votes is None else f", answer {self.answer!r} ({len(self.votes)} distinct)"
        return (f"<SearchResult {self.method}: {self.num_particles} candidates{pick}{answer}, "
                f"{self.tokens} tokens{log_z}>")


@dataclasses.dataclass(frozen=True)
class TargetScored:
    """Wrap a proposal so that each token's weight is its target increment target(v)
    (alpha log p + token-level potential) instead of target(v) - log q(v): the summed weights
    are then log gamma of the prefix, the score of beam search."""

    proposal: Callable

    def __call__(self, program, state, target):
        log_q, _ = self.proposal(program, state, target)
        return log_q, target


sweep_jit = jax.jit(sweep, static_argnums=0)


def _check(program, n, what="n"):
    if not isinstance(program, Program):
        raise InputError(f"the search baselines need a ppl.Program, got {type(program).__name__}")
    return check_positive_int(n, what)


def _candidates(program, n, key, proposal):
    kernel = build_kernel(proposal=prior() if proposal is None else proposal, ess_threshold=0.0)
    state, infos = sweep_jit(kernel, program, init(program, n), key)
    result = SMCResult.from_run(program, state, infos, method="candidates")
    tokens = int(np.sum(np.asarray(state.particles.lm.num_generated)))
    return result, tokens


def best_of_n(program: Program, n: int, key=0, *, reward: Callable | None = None, select: str = "argmax",
              temperature: float = 1.0, proposal: Callable | None = None) -> SearchResult:
    """Best-of-N (see the module docstring). reward: ``fn(texts: list[str]) -> scores`` (host
    side, called once on all candidates), or None for the importance weight log w."""
    _check(program, n)
    if select not in ("argmax", "weighted"):
        raise InputError(f"select must be 'argmax' or 'weighted', got {select!r}")
    if not (isinstance(temperature, (int, float)) and 0 < temperature < math.inf):
        raise InputError(f"temperature must be a positive number, got {temperature!r}")
    k_run, k_pick = jax.random.split(as_key(key))
    cand, tokens = _candidates(program, n, k_run, proposal)
    if reward is None:
        scores = cand.log_weights.copy()
    else:
        scores = np.asarray(reward(list(cand.texts)), np.float64).reshape(-1)
        if scores.shape != (n,):
            raise InputError(f"reward returned {scores.shape[0]} scores for {n} candidates: return one per text")
        scores = np.where(np.isnan(scores), -np.inf, scores)
        scores = np.where(np.isfinite(cand.log_weights), scores, -np.inf)  # ruled-out candidates never win
    if not np.isfinite(scores).any() and not (scores == np.inf).any():
        selected, logw = None, np.full(n, -np.inf)
    elif select == "argmax":
        selected = int(np.argmax(scores))
        logw = np.where(np.arange(n) == selected, 0.0, -np.inf)
    else:
        logw = scores / temperature
        selected = int(jax.random.categorical(k_pick, jnp.asarray(logw, jnp.float32)))
    log_z = cand.log_z if (reward is None and select == "weighted" and temperature == 1.0) else math.nan
    what = "reward" if reward is not None else "importance weight"
    return SearchResult(cand.token_ids, cand.texts, logw, log_z, cand.ess, cand.resampled, cand.eos, cand.log_p,
                        method=f"best-of-{n} ({select} of the {what})", message=cand.message,
                        scores=scores, selected=selected, tokens=tokens)


def self_consistency(program: Program, n: int, key=0, *, extract: Callable, proposal: Callable | None = None
                     ) -> SearchResult:
    """N samples from the proposal (default: the LM) and the majority answer of
    ``extract(text)`` (None: no answer, no vote). Ties: the answer seen first."""
    _check(program, n)
    if not callable(extract):
        raise InputError("self_consistency needs extract: a function text -> answer (None when there is none)")
    cand, tokens = _candidates(program, n, as_key(key), proposal)
    alive = np.isfinite(cand.log_weights)
    answers = [extract(t) if ok else None for t, ok in zip(cand.texts, alive)]
    votes: dict = {}
    for a in answers:
        if a is not None:
            votes[a] = votes.get(a, 0) + 1
    votes = dict(sorted(votes.items(), key=lambda kv: -kv[1]))
    answer = next(iter(votes), None)
    selected = next((i for i, a in enumerate(answers) if a is not None and a == answer), None)
    logw = np.where(alive, 0.0, -np.inf)
    return SearchResult(cand.token_ids, cand.texts, logw, math.nan, cand.ess, cand.resampled, cand.eos, cand.log_p,
                        method=f"self-consistency (majority vote of {n} samples)", message=cand.message,
                        scores=np.array([votes.get(a, 0) if a is not None else 0 for a in answers], float),
                        selected=selected, tokens=tokens, answer=answer, votes={k: v / n for k, v in votes.items()})


@dataclasses.dataclass(frozen=True)
class BeamKernel:
    """One beam-search step over ``width`` beams: ``kernel(key, (particles, scores), program)
    -> ((particles, scores), tokens)``; token level when ``expansions`` is None."""

    width: int
    expansions: int | None = None
    proposal: Callable = dataclasses.field(default_factory=prior)

    def __call__(self, key, carry, program: Program):
        particles, scores = carry
        b = self.width
        if self.expansions is None:  # every token of every beam
            _, target = program.next_token_weights(particles)
            vocab = target.shape[1]
            stay = jnp.where(jnp.arange(vocab)[None, :] == 0, 0.0, -jnp.inf)
            cand = scores[:, None] + jnp.where(particles.done[:, None], stay, target)
            cand = jnp.where(jnp.isnan(cand), -jnp.inf, cand)
            top, idx = jax.lax.top_k(cand.reshape(-1), b)
            rows, token = idx // vocab, (idx % vocab).astype(jnp.int32)
            particles = map_particles(lambda x: x[rows], particles)
            width = program.max_new_tokens
            j = particles.lm.num_generated
            forced = jnp.zeros((b, width), jnp.int32).at[jnp.arange(b), jnp.clip(j, 0, width - 1)].set(token)
            guided = Guided(self.proposal, forced, j + 1, jnp.full((b,), width + 1), False)
            before = particles.lm.num_generated
            particles, inc = program.step(key, particles, guided)
            scores = jnp.where(jnp.isfinite(scores[rows]), scores[rows] + inc, -jnp.inf)
            return (particles, scores), jnp.sum(particles.lm.num_generated - before)
        k = self.expansions
        rows = jnp.repeat(jnp.arange(b), k)
        first = (jnp.arange(b * k) % k) == 0
        wide = map_particles(lambda x: x[rows], particles)
        before = wide.lm.num_generated
        wide, inc = program.step(key, wide, TargetScored(self.proposal))
        # a finished beam is one candidate (its copies would only repeat it)
        cand = jnp.where(particles.done[rows] & ~first, -jnp.inf, scores[rows] + inc)
        cand = jnp.where(jnp.isnan(cand), -jnp.inf, cand)
        top, idx = jax.lax.top_k(cand, b)
        spent = jnp.sum(wide.lm.num_generated - before)
        return (map_particles(lambda x: x[idx], wide), top), spent


def beam_loop(kernel: BeamKernel, program: Program, particles, key):
    """Run ``kernel`` for ``max_new_tokens`` steps (finished beams are absorbing). Traceable."""
    b = kernel.width
    scores = jnp.where(jnp.arange(b) == 0, 0.0, -jnp.inf)  # all beams start equal: keep one

    def body(carry, key):
        (particles, scores), spent = carry
        live = jnp.any(~particles.done & jnp.isfinite(scores))
        idle = jnp.zeros((), jnp.int32)

        def step(c):  # in a batch of prompts: runs while any prompt is live; the others stay as they are
            return where_prompt(live, kernel(key, c, program), (c, idle))

        # any_prompt: an unbatched predicate under the prompt vmap, so the cond still skips idle steps
        (particles, scores), used = jax.lax.cond(any_prompt(live), step, lambda c: (c, idle), (particles, scores))
        return ((particles, scores), spent + used), None

    init_carry = ((particles, scores), jnp.zeros((), jnp.int32))
    return jax.lax.scan(body, init_carry, jax.random.split(key, program.max_new_tokens))[0]


beam_jit = jax.jit(beam_loop, static_argnums=0)


def beam_prompts(kernel: BeamKernel, program: Program, key):
    """:func:`beam_loop` for every prompt of a batched ``program`` (prompt b with key
    ``prompt_keys(key, B)[b]``), as one vmap over the prompt axis. Traceable."""
    particles = init(program, kernel.width).particles
    return map_prompts(lambda one, p, k: beam_loop(kernel, one, p, k), program, particles,
                       prompt_keys(key, program.num_prompts))


beam_prompts_jit = jax.jit(beam_prompts, static_argnums=0)


def beam_search(program: Program, width: int, key=0, *, expansions: int | None = None,
                proposal: Callable | None = None) -> SearchResult:
    """Beam search for the sequence maximising gamma(x) (see the module docstring).

    width: beams kept; expansions: None (token level: every token) or K sampled next steps
    per beam (step level, drawn from ``proposal``, default the LM). The ``selected``
    candidate is the beam with the largest log gamma.

    Many prompts: ``program`` may be a list of programs (or a ``ppl.stack``ed batch): one
    compiled search for all of them, a :class:`models.batch.Batch` of one result per prompt,
    prompt b with key ``jax.random.split(key, B)[b]`` (its one-prompt search with that key
    gives the same beams).

    >>> import jax
    >>> from genppl import models, ppl
    >>> from genppl.inference import search
    >>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=3, max_len=2)
    >>> program = ppl.Program(lm, [1], 2)
    >>> search.beam_search(program, 9).selected is not None
    True
    """
    program = as_program(program)
    _check(program, width, "width")
    if expansions is not None:
        check_positive_int(expansions, "expansions")
    elif program.step_delimiter is not None:
        raise InputError("token-level beam search needs a program without step_delimiter: for a step-level "
                         "program give expansions=K (K sampled next steps per beam)")
    kernel = BeamKernel(int(width), None if expansions is None else int(expansions),
                        prior() if proposal is None else proposal)
    if program.num_prompts is None:
        (particles, scores), spent = beam_jit(kernel, program, init(program, width).particles, as_key(key))
        return _beam_result(program, kernel, particles, scores, spent)
    (particles, scores), spent = beam_prompts_jit(kernel, program, as_key(key))
    # only what the results read comes back to the host (not the LM cache)
    particles = particles.replace(lm=particles.lm.replace(cache=None))
    particles, scores, spent = jax.device_get((particles, scores, spent))
    return Batch(_beam_result(one, kernel, host_slice(particles, b), scores[b], spent[b])
                 for b, one in enumerate(unstack(program)))


def _beam_result(program, kernel, particles, scores, spent) -> SearchResult:
    scores = np.asarray(scores, np.float64)
    ids = [list(map(int, r)) for r in particles.lm.generated()]
    tokenizer = program.lm.tokenizer
    texts = [tokenizer.decode(r) for r in ids] if tokenizer is not None else [""] * len(ids)
    alive = np.isfinite(scores)
    selected = int(np.argmax(scores)) if alive.any() else None
    message = None if alive.any() else ("every beam was ruled out: no continuation satisfies the constraints "
                                         "within max_new_tokens")
    level = "token level" if kernel.expansions is None else f"step level, {kernel.expansions} expansions per beam"
    return SearchResult(ids, texts, scores, math.nan, np.zeros(0), np.zeros(0, bool), np.asarray(particles.eos),
                        np.asarray(particles.log_p, np.float64), method=f"beam search (width {kernel.width}, {level})",
                        message=message, scores=scores, selected=selected, tokens=int(spent))
