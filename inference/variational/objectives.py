"""Variational objectives for learned proposals and twists.

Each objective is a pure loss ``objective.loss(params, key, program, batch) -> (loss,
metrics)`` to *minimise*, differentiable with ``jax.grad`` and jittable with the program and
batch as arguments. ``params`` come from ``objective.init(key)``: ``{"guide": ...}`` (plus
``"log_z"`` for trajectory balance). Samples from q are drawn inside the loss with ``key``
(stop-gradient) and re-scored by teacher forcing, so gradients flow only through log q and
log psi. Objectives that need weighted samples of the target (forward KL, contrastive twist)
take a sampler ``source(program, proposal, key, n) -> (tokens [n, L], log_weights [n])``:
:func:`smc_samples` (SMC with the current guide, the default), :func:`exact_samples` (the
enumerated support of a tabular program), your own, or None to use the ``batch`` argument,
``{"tokens": [B, L], "log_weights": [B]}`` (e.g. :func:`exact_batch`, or earlier particles).

Score-function losses (ELBO, IWAE family) use the "magic" form
``value + surrogate - stop_gradient(surrogate)``: the loss's value is the bound's estimate
and its gradient the unbiased score-function estimate with leave-one-out baselines:
grad E_q[f] = E_q[(f - b) grad log q] for any b independent of the sample.

>>> import jax
>>> from genppl import models, ppl
>>> from genppl.inference import variational
>>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=3, max_len=2)
>>> program = ppl.Program(lm, [1], 2, alpha=2.0)
>>> objective = variational.elbo(variational.Guide(proposal=models.TabularAdapter(lm)), num_samples=4)
>>> params = objective.init(jax.random.key(0))
>>> loss, metrics = objective.loss(params, jax.random.key(1), program)
>>> bool(loss >= 0.0)
True
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from genppl.models.interface import InputError, check_positive_int
from genppl.ppl.potential import has_boundary

from .guide import Guide, check_program
from .sampling import smc_samples
from .trace import rollout, trace

__all__ = ["ELBO", "IWAE", "ForwardKL", "TrajectoryBalance", "SubTrajectoryBalance", "ContrastiveTwist",
           "Objective", "elbo", "iwae", "miwae", "ciwae", "forward_kl", "trajectory_balance",
           "subtrajectory_balance", "contrastive_twist", "check_source", "loo_mean"]

sg = jax.lax.stop_gradient


class Objective:
    """Base class: a loss of (params, key, program, batch) over a :class:`Guide`."""

    #: whether the loss reads weighted target samples from its ``batch`` argument
    needs_batch = False
    #: a sampler of weighted target samples, for objectives that use them (None: the batch)
    source = None
    name = "objective"

    def __init__(self, guide: Guide, num_samples: int):
        if not isinstance(guide, Guide):
            raise InputError(f"an objective needs an inference.variational.Guide, got {type(guide).__name__}")
        self.guide = guide
        self.num_samples = check_positive_int(num_samples, "num_samples")

    def init(self, key):
        return {"guide": self.guide.init(key)}

    def check(self, params):
        """InputError unless ``params`` fit this objective (names and shapes)."""
        want = self.init(jax.random.key(0))
        if not isinstance(params, dict) or set(params) != set(want):
            raise InputError(f"{self.name} parameters must be a dict with keys {sorted(want)}, got "
                             f"{sorted(params) if isinstance(params, dict) else type(params).__name__}")
        self.guide.check(params["guide"])

    def validate(self, program, batch) -> None:
        """InputError unless the program and batch suit this objective (call before jit)."""
        check_program(program, self.name)
        if self.needs_batch and batch is None:
            raise InputError(f"{self.name} needs weighted samples of the target: pass batch="
                             "inference.variational.exact_batch(program) (tabular models) or SMC particles, "
                             "or give the objective a sampler, source=inference.variational.smc_samples")
        source_check = getattr(self.source, "validate", None)  # e.g. exact_samples needs a table
        if source_check is not None:
            source_check(program)
        if batch is not None:
            if not isinstance(batch, dict) or "tokens" not in batch or "log_weights" not in batch:
                raise InputError("batch must be a dict with 'tokens' [B, max_new_tokens] and 'log_weights' [B]")
            shape = jnp.shape(batch["tokens"])
            if len(shape) != 2 or shape[1] != program.max_new_tokens or jnp.shape(batch["log_weights"]) != shape[:1]:
                raise InputError(f"batch tokens must be [B, {program.max_new_tokens}] with log_weights [B]; got "
                                 f"{shape} and {jnp.shape(batch['log_weights'])}")

    def loss(self, params, key, program, batch=None):
        raise NotImplementedError

    # ---- shared pieces --------------------------------------------------------------------
    def from_q(self, params, key, program, n):
        """n samples from q (no gradient), re-scored by teacher forcing (with gradient):
        (tokens [n, L], :class:`Trace`)."""
        proposal = self.guide.proposal_fn
        tokens, _ = rollout(self.guide.program(sg(params["guide"]), program), key, n, proposal)
        tr = trace(self.guide.program(params["guide"], program), tokens, proposal)
        return tokens, tr

    def target_samples(self, params, key, program, batch, n):
        """Weighted target samples: from ``self.source`` (with the current guide, no
        gradient), or the ``batch`` when the source is None."""
        if self.source is None:
            return batch["tokens"], batch["log_weights"]
        return self.source(self.guide.program(sg(params["guide"]), program), self.guide.proposal_fn, key, n)

    def __repr__(self) -> str:
        return f"{self.name}(num_samples={self.num_samples}, guide={self.guide!r})"


def loo_mean(f):
    """Leave-one-out means [K] of f [K] (the baseline of sample k ignores sample k)."""
    k = f.shape[-1]
    return (jnp.sum(f, -1, keepdims=True) - f) / (k - 1)


class ELBO(Objective):
    """-ELBO = -E_q[log pi_unnorm(x) - log q(x)], score-function gradient, leave-one-out baseline.

    ELBO = log Z - KL(q||pi): its minimiser is q = pi (mode-seeking). A sample with
    pi_unnorm = 0 makes the ELBO -inf (the trainer stops with an error): keep the default
    ``Guide(log_q=tilted_target)`` with hard constraints.
    """

    name = "ELBO"

    def __init__(self, guide, num_samples: int = 8):
        super().__init__(guide, num_samples)
        if self.num_samples < 2:
            raise InputError("the leave-one-out baseline needs num_samples >= 2")

    def loss(self, params, key, program, batch=None):
        _, tr = self.from_q(params, key, program, self.num_samples)
        logq = tr.log_q_total
        f = sg(tr.log_target_total) - sg(logq)
        surrogate = jnp.mean(sg(f - loo_mean(f)) * logq)
        value = jnp.mean(f)
        return -(value + surrogate - sg(surrogate)), {"elbo": value}


class IWAE(Objective):
    """-IWAE_K, averaged over ``groups`` independent groups (MIWAE), mixed with the ELBO as
    beta * ELBO + (1 - beta) * IWAE_K (CIWAE). Gradient: the score-function estimator with
    leave-one-out learning signals L - log mean_{j != k} w_j (VIMCO-style; unbiased)."""

    name = "IWAE"

    def __init__(self, guide, num_samples: int = 8, groups: int = 1, beta: float = 0.0):
        super().__init__(guide, num_samples)
        self.groups = check_positive_int(groups, "groups")
        if self.num_samples < 2:
            raise InputError("IWAE needs num_samples >= 2 (K = 1 is the ELBO)")
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= beta <= 1.0:
            raise InputError(f"beta must be a number in [0, 1], got {beta!r}")
        self.beta = float(beta)
        self.name = "CIWAE" if self.beta > 0 else ("MIWAE" if self.groups > 1 else "IWAE")

    def loss(self, params, key, program, batch=None):
        M, K = self.groups, self.num_samples
        _, tr = self.from_q(params, key, program, M * K)
        lq = tr.log_q_total.reshape(M, K)
        logw = sg(tr.log_target_total - tr.log_q_total).reshape(M, K)
        bound = jax.nn.logsumexp(logw, -1) - math.log(K)  # [M]
        off = jnp.where(jnp.eye(K, dtype=bool), -jnp.inf, logw[:, None, :])
        others = jax.nn.logsumexp(off, -1) - math.log(K - 1)  # [M, K]
        signal = jnp.where(jnp.isfinite(others), bound[:, None] - others, bound[:, None])
        weight = jnp.exp(logw - (bound[:, None] + math.log(K)))  # normalised within a group
        # grad log w_k = -grad log q_k
        surr_iwae = jnp.mean(jnp.sum(sg(signal) * lq - sg(weight) * lq, -1))
        value = jnp.mean(bound)
        metrics = {"iwae": value}
        if self.beta > 0:
            f = logw.reshape(-1)
            lq_all = lq.reshape(-1)
            surr_elbo = jnp.mean(sg(f - loo_mean(f)) * lq_all)
            elbo = jnp.mean(f)
            metrics["elbo"] = elbo
            value = self.beta * elbo + (1 - self.beta) * value
            surr_iwae = self.beta * surr_elbo + (1 - self.beta) * surr_iwae
        return -(value + surr_iwae - sg(surr_iwae)), metrics

    def __repr__(self) -> str:
        return f"{self.name}(num_samples={self.num_samples}, groups={self.groups}, beta={self.beta:g})"


class ForwardKL(Objective):
    """KL(pi||q) up to a constant: -sum_i W_i log q(x_i) over weighted target samples
    (W = the self-normalised weights), the mass-covering direction.

    source: a sampler ``(program, proposal, key, n) -> (tokens, log_weights)`` called with the
    current guide (stop-gradient) and ``num_samples``: :func:`smc_samples` (the default; the
    "variational reasoning" view of rejection-sampling fine-tuning), :func:`exact_samples`
    (the enumerated support), or None to train on the ``batch`` passed to the loss.
    """

    name = "forward KL"

    def __init__(self, guide, num_samples: int = 32, source=smc_samples):
        super().__init__(guide, num_samples)
        self.source = check_source(source)
        self.needs_batch = source is None

    def loss(self, params, key, program, batch=None):
        tokens, logw = self.target_samples(params, key, program, batch, self.num_samples)
        tr = trace(self.guide.program(params["guide"], program), tokens, self.guide.proposal_fn)
        w = jax.nn.softmax(logw)
        w = jnp.where(jnp.isfinite(logw), w, 0.0)
        loss = -jnp.sum(w * jnp.where(w > 0, tr.log_q_total, 0.0))
        return loss, {"cross_entropy": loss}


def check_source(source):
    """InputError unless ``source`` is None or a sampler function."""
    if source is not None and not callable(source):
        raise InputError("source must be a sampler (program, proposal, key, n) -> (tokens, log_weights), e.g. "
                         "inference.variational.smc_samples or exact_samples, or None to use the batch; "
                         f"got {source!r}")
    return source


class TrajectoryBalance(Objective):
    """GFlowNet trajectory balance: mean over x ~ q of (log Z_theta + log q(x) - log pi_unnorm(x))^2.

    ``log_z="learned"``: log Z_theta is a parameter (``params["log_z"]``); at the minimum
    q = pi and log Z_theta = log Z, so it serves one target (one prompt). ``log_z="batch"``:
    log Z_theta is set, without gradient, to its optimum for the batch, the mean of
    log pi_unnorm - log q (the log-variance loss), so one guide can be trained over prompts
    whose log Z differ. Samples with pi_unnorm = 0 carry no signal and are skipped
    (:func:`tilted_target` never proposes those that a token-level constraint rules out).
    """

    name = "trajectory balance"

    def __init__(self, guide: Guide, num_samples: int, log_z: str = "learned"):
        super().__init__(guide, num_samples)
        if log_z not in ("learned", "batch"):
            raise InputError(f"log_z must be 'learned' (a parameter, one target) or 'batch' (its optimum "
                             f"per batch, for many prompts), got {log_z!r}")
        self.log_z = log_z
        if log_z == "batch":
            self.name = "trajectory balance (log Z per batch)"

    def init(self, key):
        params = {"guide": self.guide.init(key)}
        if self.log_z == "learned":
            params["log_z"] = jnp.zeros((), jnp.float32)
        return params

    def loss(self, params, key, program, batch=None):
        _, tr = self.from_q(params, key, program, self.num_samples)
        logt = sg(tr.log_target_total)
        ok = jnp.isfinite(logt)
        count = jnp.maximum(jnp.sum(ok), 1)
        d = tr.log_q_total - jnp.where(ok, logt, 0.0)
        log_z = params["log_z"] if self.log_z == "learned" else -sg(jnp.sum(jnp.where(ok, d, 0.0)) / count)
        loss = jnp.sum(jnp.where(ok, (log_z + d) ** 2, 0.0)) / count
        return loss, {"log_z": log_z}


class SubTrajectoryBalance(Objective):
    """Sub-trajectory balance where every prefix may terminate (EOS):

        D(s) = log R(s, stop) - log q(stop | s) - log q(s),   loss = mean over pairs (D_i - D_j)^2

    over the prefixes s_0..s_T of x ~ q, with R(s, stop) = pi_unnorm(s EOS) (and the cut
    sequence at the cap, where stopping is forced). D is constant (= log Z) iff q = pi on
    every prefix. Needs token-level potentials: R of every prefix comes from the EOS column.
    """

    name = "sub-trajectory balance"

    def validate(self, program, batch):
        super().validate(program, batch)
        if has_boundary(program.potential):
            raise InputError("sub-trajectory balance needs the terminal reward of every prefix, which a "
                             "sequence-level potential does not give: use token-level potentials, or "
                             "trajectory_balance")

    def loss(self, params, key, program, batch=None):
        _, tr = self.from_q(params, key, program, self.num_samples)
        B, L = tr.moving.shape
        lq = jnp.where(tr.moving, tr.log_q, 0.0)
        tg = sg(jnp.where(tr.moving, tr.target, 0.0))
        zero = jnp.zeros((B, 1), jnp.float32)
        C = jnp.concatenate([zero, jnp.cumsum(lq, -1)], -1)  # log q(s_t), t = 0..L
        T = jnp.concatenate([zero, jnp.cumsum(tg, -1)], -1)
        total = T[:, -1]
        valid_mid = tr.moving & jnp.isfinite(tr.target_eos) & jnp.isfinite(tr.log_q_eos)
        at_cap = tr.done & ~tr.eos & jnp.isfinite(total)
        valid = jnp.concatenate([valid_mid, at_cap[:, None]], -1)
        log_r = jnp.concatenate([T[:, :-1] + sg(jnp.where(valid_mid, tr.target_eos, 0.0)), total[:, None]], -1)
        lq_stop = jnp.concatenate([jnp.where(valid_mid, tr.log_q_eos, 0.0), zero], -1)
        D = jnp.where(valid, log_r - lq_stop - C, 0.0)
        pair = valid[:, :, None] & valid[:, None, :]
        sq = jnp.where(pair, (D[:, :, None] - D[:, None, :]) ** 2, 0.0)
        per = jnp.sum(sq, (1, 2)) / jnp.maximum(jnp.sum(pair, (1, 2)) - jnp.sum(valid, 1), 1)
        loss = jnp.mean(per)
        return loss, {"subtb": loss}


class ContrastiveTwist(Objective):
    """Contrastive twist learning (CTL): the gradient

        E_sigma[sum_t grad log psi(x_<=t)] - sum_t E_{pi_t}[grad log psi(x_<=t)]

    (negated, as a loss), where pi_t is the twisted intermediate target after t tokens.
    Positives: weighted target samples from ``source`` (default :func:`smc_samples`: particles
    of twisted SMC with the current twist; None: the given batch). Negatives: ``num_samples`` sequences from the twisted
    proposal, self-normalised at every t by their cumulative twisted weights. Its fixed point
    is the optimal twist psi*(x_<=t) ∝ sigma_t(x_<=t) / (p(x_<=t)^alpha phi_t(x_<=t)).
    """

    name = "contrastive twist"

    def __init__(self, guide, num_samples: int = 32, source=smc_samples, num_positive: int | None = None):
        super().__init__(guide, num_samples)
        if guide.twist is None:
            raise InputError("contrastive twist learning needs a Guide with a twist "
                             "(models.TabularTwist or models.TwistHead)")
        self.source = check_source(source)
        self.num_positive = (self.num_samples if num_positive is None
                             else check_positive_int(num_positive, "num_positive"))
        self.needs_batch = source is None

    def loss(self, params, key, program, batch=None):
        k_pos, k_neg = jax.random.split(key)
        proposal = self.guide.proposal_fn
        fixed = self.guide.program(sg(params["guide"]), program)
        live = self.guide.program(params["guide"], program)
        pos_tokens, pos_logw = self.target_samples(params, k_pos, program, batch, self.num_positive)
        w_pos = jax.nn.softmax(pos_logw)
        w_pos = jnp.where(jnp.isfinite(pos_logw), w_pos, 0.0)
        pos = trace(live, pos_tokens, proposal).twist  # [B, L]
        positive = jnp.sum(w_pos[:, None] * pos)

        neg_tokens, _ = rollout(fixed, k_neg, self.num_samples, proposal)
        tr = trace(live, neg_tokens, proposal)
        inc = sg(jnp.where(tr.moving, tr.target - tr.log_q, 0.0))
        cum = jnp.cumsum(inc, -1)  # twisted log-weights after each step [K, L]
        w_neg = jax.nn.softmax(jnp.where(jnp.isnan(cum), -jnp.inf, cum), axis=0)
        w_neg = jnp.where(jnp.isfinite(cum), w_neg, 0.0)
        negative = jnp.sum(w_neg * tr.twist)
        loss = negative - positive
        return loss, {"ctl": loss}


# ---- constructors -----------------------------------------------------------------------
def elbo(guide, num_samples: int = 8) -> ELBO:
    """-ELBO with a leave-one-out baseline."""
    return ELBO(guide, num_samples)


def iwae(guide, num_samples: int = 8) -> IWAE:
    """-IWAE_K = -E[log (1/K) sum_k w_k] with leave-one-out learning signals."""
    return IWAE(guide, num_samples)


def miwae(guide, num_samples: int = 4, groups: int = 4) -> IWAE:
    """-MIWAE_{M,K}: the mean of M independent IWAE_K bounds."""
    return IWAE(guide, num_samples, groups=groups)


def ciwae(guide, num_samples: int = 8, beta: float = 0.5) -> IWAE:
    """-CIWAE_beta = -(beta * ELBO + (1 - beta) * IWAE_K) on the same samples."""
    return IWAE(guide, num_samples, beta=beta)


def forward_kl(guide, num_samples: int = 32, source=smc_samples) -> ForwardKL:
    """KL(pi||q) from weighted target samples (``source``: a sampler, or None for the batch)."""
    return ForwardKL(guide, num_samples, source)


def trajectory_balance(guide, num_samples: int = 16, log_z: str = "learned") -> TrajectoryBalance:
    """GFlowNet trajectory balance with a learned log Z (``log_z="learned"``: one target) or
    log Z at its per-batch optimum (``log_z="batch"``: many prompts)."""
    return TrajectoryBalance(guide, num_samples, log_z)


def subtrajectory_balance(guide, num_samples: int = 16) -> SubTrajectoryBalance:
    """Sub-trajectory balance where every prefix may terminate."""
    return SubTrajectoryBalance(guide, num_samples)


def contrastive_twist(guide, num_samples: int = 32, source=smc_samples) -> ContrastiveTwist:
    """Contrastive twist learning (``source`` of positives: a sampler, or None for the batch)."""
    return ContrastiveTwist(guide, num_samples, source)
