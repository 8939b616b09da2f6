"""Step-level particle filtering with a process reward model (Puri et al. 2025).

Particles are partial solutions; a transition samples one *step* from the LM (tokens up to a
delimiter such as ``". "`` or a blank line), the reward model scores the partial solution, and
the particles are resampled on those scores. The published method replaces each weight by a
function of the latest reward and reports no normalising constant; here the reward enters as
an exact potential (:class:`ppl.StepReward`), so the run targets a stated distribution and
tracks log Z:

* ``final=False`` (default, :class:`ppl.StepReward`): pi(x) ∝ p(x) * prod_k r(x_<=k)^beta,
  each step's reward a likelihood of "this step is right", the state-space model the paper
  describes;
* ``final=True`` (:class:`ppl.FinalReward`): pi(x) ∝ p(x) * r(x)^beta, with the rewards of
  partial solutions used as a twist (their ratios), so only the finished solution's reward
  shapes the target.

Proposals come from the LM itself by default (``proposal=ppl.proposals.prior()``; any proposal
function may be given); resampling happens at every step by default (``ess_threshold=1.0``), as in the paper.
"""

from __future__ import annotations

from genppl.models.batch import is_prompt_batch
from genppl.models.interface import InputError
from genppl.models.prm import ProcessRewardModel
from genppl.ppl.potential import Potential
from genppl.ppl.prm import PRMFinalReward, PRMReward
from genppl.ppl.program import Program
from genppl.ppl.proposals import prior
from genppl.ppl.scorers import FinalReward, StepReward

from .resampling import systematic
from .results import SMCResult
from .run import run


def reward_particle_filter(lm, prompt_ids, reward, n: int, key=0, *, max_new_tokens: int,
                           step_delimiter: str = "\n", final: bool = False, beta: float = 1.0,
                           potential: Potential | None = None, proposal=None,
                           batched: bool = True, resampling_fn=systematic,
                           ess_threshold: float = 1.0) -> SMCResult:
    """Particle filtering over steps with a reward model ``reward(texts) -> r`` in [0, 1].

    Targets (see the module docstring): p(x) prod_k r(x_<=k)^beta, or with ``final=True``
    p(x) r(x)^beta. ``potential`` multiplies in further factors (constraints, verifiers).
    proposal: default the LM itself (:func:`ppl.proposals.prior`). ``prompt_ids`` may be a
    batch of prompts (a list of id lists): one compiled run, a :class:`models.batch.Batch` of
    results, prompt b with key ``jax.random.split(key, B)[b]``; the reward model is then
    called once per step with the texts of every prompt's particles.

    >>> import re
    >>> def reward(texts):   # fraction of worked equations that hold, smoothed into (0, 1)
    ...     out = []
    ...     for t in texts:
    ...         eqs = re.findall(r"(\\d+) ([-+*]) (\\d+) = (\\d+)", t)
    ...         ok = sum(eval(f"{a}{op}{b}") == int(c) for a, op, b, c in eqs)
    ...         out.append((ok + 1) / (len(eqs) + 2))
    ...     return out
    >>> # inference.smc.reward_particle_filter(lm, prompt, reward, 16, max_new_tokens=64, step_delimiter=". ")

    ``reward`` may also be a trained :class:`models.ProcessRewardModel` (``models.load_prm()``):
    it then scores the prompt and the partial solution on the device (:class:`ppl.PRMReward`,
    or :class:`ppl.PRMFinalReward` with ``final=True``), with no host round trip.
    """
    is_prm = isinstance(reward, ProcessRewardModel)
    if not (callable(reward) or is_prm):
        raise InputError(f"reward must be a function texts -> rewards in [0, 1] or a models.ProcessRewardModel, "
                         f"got {type(reward).__name__}")
    if lm.tokenizer is None:
        raise InputError("reward_particle_filter decodes texts for the reward model: the LM needs a tokenizer")
    if not isinstance(final, bool):
        raise InputError(f"final must be True (target p(x) r(x)^beta) or False (p(x) prod_k r_k^beta), got {final!r}")
    if is_prm:
        factor = (PRMFinalReward if final else PRMReward)(reward, lm.tokenizer, beta=beta)
    else:
        factor = (FinalReward if final else StepReward)(reward, lm.tokenizer, beta=beta, batched=batched)
    if potential is not None:
        factor = factor * potential
    batch = is_prompt_batch(prompt_ids)
    program = [Program(lm, p, max_new_tokens, potential=factor, step_delimiter=step_delimiter) for p in prompt_ids] \
        if batch else Program(lm, prompt_ids, max_new_tokens, potential=factor, step_delimiter=step_delimiter)
    result = run(program, n, key, resampling_fn=resampling_fn, ess_threshold=ess_threshold,
                 proposal=prior() if proposal is None else proposal)
    target = "p(x) r(x)^beta" if final else "p(x) prod_k r(x_<=k)^beta"
    for one in (result if batch else [result]):
        one.method = f"step-level particle filter with a reward model (target {target}, beta={beta:g})"
    return result
