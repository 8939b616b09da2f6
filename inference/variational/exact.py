"""Exact answers on a program whose continuations can be enumerated (a :class:`models.TabularLM`).

* :func:`enumerate_tokens`: every finished continuation, EOS-padded [S, L] (a static array:
  it depends only on the vocabulary, the EOS id and the cap);
* :func:`exact_batch`: the whole support with log pi(x) = log pi_unnorm(x) - log Z, and log Z;
* :func:`exact_samples`: the same as a sampler ``(program, proposal, key, n) -> (tokens,
  log_weights)`` for the objectives' ``source`` (traceable; ``key`` and ``n`` are ignored:
  the weighted support is an exact expectation under pi);
* :func:`exact_kl`: KL(pi||q) = sum_x pi(x) log(pi(x)/q(x)) and KL(q||pi) by enumeration.

>>> import jax
>>> from genppl import models, ppl
>>> from genppl.inference import variational
>>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=3, max_len=2)
>>> program = ppl.Program(lm, [1], 2, potential=ppl.BannedTokens([2]), alpha=2.0)
>>> guide = variational.Guide(proposal=models.TabularAdapter(lm))
>>> kl_pq, kl_qp, log_z = variational.exact_kl(guide, guide.init(jax.random.key(0)), program)
>>> bool(kl_pq >= 0 and kl_qp >= 0)
True
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from genppl.models.interface import InputError
from genppl.models.lora import GuidedLM
from genppl.models.tabular import TabularLM

from .guide import check_program
from .trace import trace

__all__ = ["check_exact", "enumerate_tokens", "exact_batch", "exact_kl", "exact_samples"]


def check_exact(program) -> TabularLM:
    """The program's tabular LM; InputError unless its continuations can be enumerated."""
    lm = program.lm.base if isinstance(program.lm, GuidedLM) else program.lm
    if not isinstance(lm, TabularLM):
        raise InputError("exact samples need a model whose sequences can be enumerated (models.TabularLM); "
                         f"this program's LM is {type(lm).__name__}: use SMC samples instead "
                         "(source=inference.variational.smc_samples)")
    if program.max_new_tokens > lm.max_len:
        raise InputError(f"max_new_tokens={program.max_new_tokens} exceeds the table's max_len={lm.max_len}")
    if program.stop is not None:
        raise InputError("exact enumeration does not support stop strings")
    return lm


def enumerate_tokens(vocab_size: int, eos_id: int, cap: int) -> np.ndarray:
    """Every continuation that ends with EOS within ``cap`` tokens or is cut at ``cap``,
    EOS-padded to [S, cap] (int32), in the order of :meth:`models.TabularLM.enumerate`."""
    symbols = [t for t in range(vocab_size) if t != eos_id]
    rows = []
    for depth in range(cap + 1):
        for prefix in itertools.product(symbols, repeat=depth):
            rows.append(list(prefix) + [eos_id] * (cap - depth))
    return np.asarray(rows, np.int32).reshape(-1, cap)


def exact_samples(program, proposal, key, n):
    """The whole support as weighted samples: (tokens [S, L], log pi(x) [S]) with the weights
    normalised (a stop-gradient). Traceable; needs a :class:`models.TabularLM`."""
    lm = check_exact(program)
    tokens = jnp.asarray(enumerate_tokens(lm.vocab_size, lm.eos_id, program.max_new_tokens))
    logt = jax.lax.stop_gradient(trace(program, tokens, proposal).log_target_total)
    return tokens, logt - jax.nn.logsumexp(logt)


#: samplers may carry a ``validate(program)`` that objectives call before compiling
exact_samples.validate = check_exact


def exact_batch(program) -> dict:
    """The program's whole support: {"tokens": [S, L], "log_weights": log pi(x) [S] (float32),
    "log_z": float}, with -inf for sequences the target rules out. Needs a
    :class:`models.TabularLM`; sums in float64 on the host."""
    lm = check_exact(program)
    check_program(program, "exact enumeration")
    tokens = jnp.asarray(enumerate_tokens(lm.vocab_size, lm.eos_id, program.max_new_tokens))
    logt = np.asarray(jax.jit(trace)(program, tokens).log_target_total, np.float64)
    log_z = np.logaddexp.reduce(logt)
    if not np.isfinite(log_z):
        raise InputError("the target rules out every sequence (Z = 0): loosen the constraints")
    return {"tokens": tokens, "log_weights": jnp.asarray(logt - log_z, jnp.float32), "log_z": float(log_z)}


def exact_kl(guide, params, program, batch=None):
    """(KL(pi||q), KL(q||pi), log Z) by enumeration (sums in float64 on the host; log q from
    a float32 pass). KL(q||pi) is inf when q puts mass (above 1e-4) outside pi's support."""
    batch = exact_batch(program) if batch is None else batch
    tr = jax.jit(trace, static_argnums=2)(guide.program(params, program), batch["tokens"], guide.proposal_fn)
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
