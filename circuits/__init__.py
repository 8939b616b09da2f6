"""Tractable models for guiding generation: HMMs, DFAs for lexical constraints, the exact
HMM x DFA guide, and probabilistic circuits. Imports ``ppl`` and ``models``, never ``inference``.

* HMMs (:mod:`circuits.hmm`): :class:`HMM`, batched log-space :func:`log_likelihood`,
  :func:`posteriors`, :func:`forward_messages`, :func:`sample`, EM (:func:`em_step`,
  :func:`fit`, full- or mini-batch); distillation from an LM (:func:`distill_hmm`).
* DFAs (:mod:`circuits.dfa`): :func:`constraint_dfa` (keywords, banned words and a regex,
  lifted to the tokenizer's tokens as a :class:`ppl.automata.TokenDFA`); the automata it
  combines live in :mod:`ppl.automata`.
* The guide (:mod:`circuits.guide`): :class:`HMMGuide`, a token-level :class:`ppl.Potential`
  giving every next token p_HMM(constraint | prefix, token); :func:`constrained_sample`.
* Circuits (:mod:`circuits.layers`, :mod:`~circuits.structures`, :mod:`~circuits.queries`,
  :mod:`~circuits.learning`): :class:`Circuit` of :class:`Input` / :class:`Product` /
  :class:`Sum` blocks; :func:`hmm_circuit`, :func:`random_binary_tree`, :func:`chow_liu_tree`;
  :func:`marginal`, :func:`conditional`, :func:`circuit_sample`, :func:`map_assignment`;
  :func:`circuit_em_step`, :func:`fit_em`, :func:`fit_sgd`.

>>> import jax
>>> from genppl import models, ppl, circuits
>>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=4, max_len=4)
>>> hmm = circuits.HMM.random(jax.random.key(1), num_states=3, vocab_size=4)
>>> guide = circuits.HMMGuide(hmm, circuits.constraint_dfa(lm, keywords=["ab"], whole_word=False), 4)
>>> program = ppl.Program(lm, [1], max_new_tokens=4, potential=guide)   # proposal p_LM * guide
"""

from .dfa import constraint_dfa
from .distill import distill_hmm, kmeans, lm_features, lm_samples
from .guide import HMMGuide, backward_tables, constrained_sample, reachable, sample_loop
from .hmm import HMM, em_step, fit, forward_messages, log_likelihood, posteriors, sample
from .layers import Circuit, Input, Product, Sum
from .learning import em_step as circuit_em_step
from .learning import fit_em, fit_sgd
from .queries import conditional, map_assignment, marginal
from .queries import sample as circuit_sample
from .structures import chow_liu_tree, hmm_circuit, random_binary_tree

__all__ = [
    # HMMs, DFAs, the guide
    "HMM", "HMMGuide", "backward_tables", "constrained_sample", "constraint_dfa", "distill_hmm",
    "em_step", "fit", "forward_messages", "kmeans", "lm_features", "lm_samples", "log_likelihood",
    "posteriors", "reachable", "sample", "sample_loop",
    # circuits
    "Circuit", "Input", "Product", "Sum", "chow_liu_tree", "circuit_em_step", "circuit_sample",
    "conditional", "fit_em", "fit_sgd", "hmm_circuit", "map_assignment", "marginal", "random_binary_tree",
]
