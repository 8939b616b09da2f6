"""Exact transition matrices of particle Gibbs and PGAS by enumeration (numpy float64).

A tiny tabular program (target pi(x) ∝ p(x)^alpha over continuations ending with EOS or cut
at the cap, token- or step-level) and N = 2 conditional-SMC particles: every random choice of
one particle-Gibbs iteration (the reference's ancestor, the free particle's ancestor and
increment at every step, the final selection) is enumerated with its probability, written
here from the algorithm's definition and independently of the sampler's code.
"""

import collections
import itertools

import numpy as np


def log_softmax(row):
    finite = row[np.isfinite(row)]
    top = finite.max()
    return row - (top + np.log(np.sum(np.exp(finite - top))))


def softmax(logw):
    logw = np.asarray(logw, np.float64)
    w = np.exp(logw - logw[np.isfinite(logw)].max())
    return w / w.sum()


def log_mean_exp(logw):
    return np.logaddexp.reduce(logw) - np.log(len(logw))


class Model:
    """The program's pieces: target and proposal rows per prefix, finished-ness, steps."""

    def __init__(self, lm, cap, alpha, proposal, delimiters=()):
        table = np.asarray(lm.table, np.float64)  # renormalised in float64: rows sum to 1 exactly
        top = np.max(table, axis=1, keepdims=True)
        self.table = table - (top + np.log(np.sum(np.exp(table - top), axis=1, keepdims=True)))
        self.lm, self.cap, self.alpha, self.proposal = lm, cap, alpha, proposal
        self.eos, self.vocab = lm.eos_id, lm.vocab_size
        self.delimiters = set(delimiters)  # empty: token level (every token is a step)

    def target(self, prefix):
        return self.alpha * self.table[self.lm.code(prefix)]

    def log_q(self, prefix):
        if self.proposal == "prior":
            return self.table[self.lm.code(prefix)]
        return log_softmax(self.target(prefix))  # locally optimal

    def finished(self, seq):
        return len(seq) == self.cap or (len(seq) > 0 and seq[-1] == self.eos)

    def ends_step(self, seq):
        return self.finished(seq) or not self.delimiters or seq[-1] in self.delimiters

    def increments(self, prefix):
        """Every next step from an unfinished prefix: (tokens, log q, log G)."""
        out = []
        lq, lt = self.log_q(prefix), self.target(prefix)
        for v in range(self.vocab):
            if not np.isfinite(lq[v]):
                continue
            new = (*prefix, v)
            if self.ends_step(new):
                out.append(((v,), lq[v], lt[v] - lq[v]))
            else:
                out += [((v, *r), lq[v] + a, lt[v] - lq[v] + g) for r, a, g in self.increments(new)]
        return out

    def forced_increment(self, prefix, ref):
        """The reference's next step after ``prefix`` (a prefix of ``ref``): (tokens, log G)."""
        cur, g = tuple(prefix), 0.0
        while True:
            v = ref[len(cur)]
            lq, lt = self.log_q(cur), self.target(cur)
            g += lt[v] - lq[v]
            cur = (*cur, v)
            if self.ends_step(cur):
                return cur, g

    def join(self, prefix, rest):
        """log gamma(prefix ++ rest) - log gamma(prefix), -inf if not a valid path."""
        if self.finished(prefix):
            return 0.0 if not rest else -np.inf
        if not rest:
            return -np.inf
        cur, total = tuple(prefix), 0.0
        for v in rest:
            if self.finished(cur):
                return -np.inf
            total += self.target(cur)[v]
            cur = (*cur, v)
        return total if self.finished(cur) else -np.inf

    def log_gamma(self, seq):
        return self.join((), tuple(seq))


def pg_row(model, ref, num_particles=2, ancestor_sampling=False, select="weights"):
    """{x': K(ref, x')} of one particle-Gibbs iteration conditioned on ``ref``. ``select``
    "uniform" picks the final particle ignoring the weights: a deliberately wrong kernel."""
    row = collections.defaultdict(float)
    n = num_particles

    def rec(parts, logw, ref, prob, t):
        if all(model.finished(p) for p in parts):
            final = softmax(logw) if select == "weights" else np.full(n, 1.0 / n)
            for k, w in enumerate(final):
                row[parts[k]] += prob * w
            return
        if t == 0:
            ref_choices, anc_choices, base = [(0, 1.0, ref)], [((0,) * (n - 1), 1.0)], list(logw)
        else:
            w = softmax(logw)
            if ancestor_sampling:
                rest = tuple(ref[len(parts[0]):])
                lr = np.array([model.join(p, rest) for p in parts])
                a = softmax(np.log(np.maximum(w, 1e-300)) + lr) * (w > 0)
                a = a / a.sum()
                ref_choices = [(b, a[b], (*parts[b], *rest)) for b in range(n) if a[b] > 0]
            else:
                ref_choices = [(0, 1.0, ref)]
            anc_choices = [(c, float(np.prod([w[i] for i in c])))
                           for c in itertools.product(range(n), repeat=n - 1)]
            anc_choices = [(c, p) for c, p in anc_choices if p > 0]
            base = [log_mean_exp(np.array(logw))] * n
        for b, pb, new_ref in ref_choices:
            for combo, pa in anc_choices:
                rows = [parts[b]] + [parts[i] for i in combo]
                options = []
                for i, p in enumerate(rows):
                    if model.finished(p):
                        options.append([(p, 0.0, 0.0)])
                    elif i == 0:
                        new, g = model.forced_increment(p, new_ref)
                        options.append([(new, 0.0, g)])
                    else:
                        options.append([((*p, *inc), lq, g) for inc, lq, g in model.increments(p)])
                for choice in itertools.product(*options):
                    q = np.exp(sum(c[1] for c in choice))
                    rec([c[0] for c in choice], [base[i] + choice[i][2] for i in range(n)], new_ref,
                        prob * pb * pa * q, t + 1)

    rec([()] * n, [0.0] * n, tuple(ref), 1.0, 0)
    return dict(row)


def pg_matrix(model, support, num_particles=2, ancestor_sampling=False, select="weights"):
    index = {s: i for i, s in enumerate(support)}
    k = np.zeros((len(support), len(support)))
    for s in support:
        for y, p in pg_row(model, s, num_particles, ancestor_sampling, select).items():
            k[index[s], index[y]] += p
    return k
