"""The method table of the ``genppl`` command: each method name maps to a small function that
calls the library's public function for it.

A method function is ``run(session, prompt_ids, key) -> output``: ``models.Samples`` (plain
sampling, MH and rollout power sampling) or an ``inference.smc.SMCResult`` (weighted
particles). Given a batch of prompts (a list of id lists) it returns a ``models.batch.Batch``
of one output per prompt, all prompts run in one compiled call (prompt b with the key
``jax.random.split(key, B)[b]``). A :class:`Session` holds what a run shares across its prompts: the LM, the
:class:`~genppl.cli.config.RunConfig`, the potential of the SMC methods (built once), the
learned guide of ``--learned``, and an explicit cache of HMM guides (one per prompt).

=================  ===========================================================================
method             calls
=================  ===========================================================================
sample             ``models.sample``
smc                ``inference.smc.run`` (``--learned``: on ``variational.Guide.program``, with
                   the guide's proposal)
smc-steer          ``inference.smc.run(kernel=inference.smc.steer.build_kernel())``
pf                 ``inference.smc.reward_particle_filter`` (reward: ``tasks.arithmetic.step_reward``;
                   ``--prm prm``: the trained PRM, ``models.load_prm``)
smc-guided         ``inference.smc.run`` on a program whose potential is ``circuits.HMMGuide``
power-mh           ``inference.mcmc.power_mcmc``
power-smc          ``inference.power.power_smc`` (``--rejuvenate``: ``inference.mcmc.rejuvenation``)
power-rollout      ``inference.power.power_rollout``
pg, pgas           ``inference.mcmc.run_chains`` with ``inference.smc.conditional.particle_gibbs``
mh                 ``inference.mcmc.run_chains`` with ``inference.mcmc.program_mh``
best-of-n          ``inference.search.best_of_n`` (reward on arithmetic: ``tasks.arithmetic.step_reward``;
                   ``--prm prm``: the PRM's final reward, ``ppl.PRMFinalReward``)
beam               ``inference.search.beam_search``
self-consistency   ``inference.search.self_consistency`` (arithmetic: ``tasks.arithmetic.extract_answer``)
power-smc-adaptive ``inference.power.adaptive_power_smc``
=================  ===========================================================================
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from genppl.models.interface import InputError

#: tasks whose answers are worked equations (step verifier, step rewards, "The answer is N")
WORD_PROBLEMS = ("arithmetic", "chains", "multistep")

__all__ = ["METHODS", "Method", "Session", "encode_prompt", "prepare", "step_delimiter"]


@dataclasses.dataclass(frozen=True)
class Method:
    """One row of the method table.

    run: ``(session, prompt_ids, key) -> output``; help: one line for ``--help``; options:
    the method-specific options (argparse ``dest`` names) it takes: giving any other one is
    an error; power: whether it samples p^alpha alone (``--alpha`` defaults to 4); batched:
    whether ``run`` also takes a list of prompts (one compiled call for all of them; see
    ``cli.main.PROMPTS_PER_CALL``)."""

    run: Callable
    help: str
    options: frozenset
    power: bool = False
    batched: bool = True


@dataclasses.dataclass
class Session:
    """What one run shares across its prompts (built once by :func:`prepare`).

    guides is an explicit cache: the ``smc-guided`` potential of each prompt (its HMM is
    distilled from the LM's continuations of that prompt)."""

    lm: Any
    config: Any
    potential: Any = None
    step_delimiter: str | None = None
    learned: Any = None  # (guide, params) of --learned
    reward: Any = None  # --prm: a host function texts -> r, or a models.ProcessRewardModel
    guides: dict = dataclasses.field(default_factory=dict)
    mesh: Any = None  # a multi-process run's mesh of every process's devices (sample and smc take it)


# ---- the methods --------------------------------------------------------------------------
def run_sample(session: Session, prompt_ids, key):
    from genppl import models

    c = session.config
    return models.sample(session.lm, prompt_ids, c.n, c.max_new_tokens, key,
                         temperature=c.temperature, top_k=c.top_k, top_p=c.top_p, mesh=session.mesh)


def _program(session: Session, prompt_ids, potential, delimiter):
    from genppl import ppl
    from genppl.models.batch import is_prompt_batch

    if is_prompt_batch(prompt_ids):  # potential: one for all, or a function of the prompt
        return ppl.stack([_program(session, p, potential(p) if callable(potential) and not isinstance(
            potential, ppl.Potential) else potential, delimiter) for p in prompt_ids])
    c = session.config
    return ppl.Program(session.lm, prompt_ids, c.max_new_tokens, potential=potential, alpha=c.alpha,
                       step_delimiter=delimiter)


def run_smc(session: Session, prompt_ids, key):
    from genppl.inference import smc

    c = session.config
    program = _program(session, prompt_ids, session.potential, session.step_delimiter)
    proposal = c.proposal_fn
    if session.learned is not None:
        guide, params = session.learned
        program, proposal = guide.program(params, program), guide.proposal_fn
    return smc.run(program, c.n, key, resampling_fn=c.resampling_fn, proposal=proposal,
                   ess_threshold=c.ess_threshold, mesh=session.mesh)


def run_smc_steer(session: Session, prompt_ids, key):
    from genppl.inference import smc

    # without-replacement selection expands every next token: a token-level program, so any
    # step verifier is checked once, on the finished text
    program = _program(session, prompt_ids, session.potential, None)
    return smc.run(program, session.config.n, key, kernel=smc.steer.build_kernel())


def run_pf(session: Session, prompt_ids, key):
    from genppl.inference import smc

    c = session.config
    reward = session.reward if session.reward is not None else load_reward(c.prm or "verifier")
    return smc.reward_particle_filter(
        session.lm, prompt_ids, reward, c.n, key, max_new_tokens=c.max_new_tokens,
        step_delimiter=session.step_delimiter, final=c.pf_target == "final", beta=c.beta, potential=session.potential,
        proposal=c.proposal_fn, resampling_fn=c.resampling_fn, ess_threshold=c.ess_threshold)


def run_smc_guided(session: Session, prompt_ids, key):
    from genppl.inference import smc

    c = session.config
    from genppl.models.batch import is_prompt_batch

    batch = is_prompt_batch(prompt_ids)
    potential = (lambda p: guided_potential(session, p)) if batch else guided_potential(session, prompt_ids)
    program = _program(session, prompt_ids, potential, None)
    result = smc.run(program, c.n, key, resampling_fn=c.resampling_fn, proposal=c.proposal_fn,
                     ess_threshold=c.ess_threshold)
    for one in (result if batch else [result]):
        one.method = f"SMC with the HMM x DFA guide ({one.method})"
    return result


def run_power_mh(session: Session, prompt_ids, key):
    from genppl.inference import mcmc

    c = session.config
    return mcmc.power_mcmc(session.lm, prompt_ids, c.n, c.max_new_tokens, key, alpha=c.alpha,
                           block_size=c.block_size, num_mcmc=c.num_mcmc, move=c.mh_move_fn)


def run_power_smc(session: Session, prompt_ids, key):
    from genppl.inference import mcmc, power

    c = session.config
    move = mcmc.rejuvenation(c.rejuvenate) if c.rejuvenate else None
    return power.power_smc(session.lm, prompt_ids, c.n, c.max_new_tokens, key, alpha=c.alpha,
                           ramp_tokens=c.ramp_tokens, resampling_fn=c.resampling_fn,
                           ess_threshold=c.ess_threshold, move=move)


def run_power_rollout(session: Session, prompt_ids, key):
    from genppl.inference import power

    c = session.config
    return power.power_rollout(session.lm, prompt_ids, c.n, c.max_new_tokens, key, alpha=c.alpha,
                               top_k=c.rollout_top_k, rollouts=c.rollouts, horizon=c.horizon,
                               jackknife=c.jackknife)


def _search_program(session: Session, prompt_ids, delimiter=None):
    return _program(session, prompt_ids, session.potential, delimiter)


def run_chains(session: Session, prompt_ids, key, kernel):
    from genppl.inference import mcmc

    c = session.config
    return mcmc.run_chains(_search_program(session, prompt_ids), kernel, c.n, c.iterations, key)


def run_pg(session: Session, prompt_ids, key, ancestor_sampling=False):
    from genppl.inference.smc import conditional

    c = session.config
    return run_chains(session, prompt_ids, key,
                      conditional.particle_gibbs(c.particles, c.proposal_fn, ancestor_sampling))


def run_pgas(session: Session, prompt_ids, key):
    return run_pg(session, prompt_ids, key, ancestor_sampling=True)


def run_mh(session: Session, prompt_ids, key):
    from genppl.inference import mcmc

    c = session.config
    return run_chains(session, prompt_ids, key, mcmc.program_mh(c.mh_move_fn, c.proposal_fn))


def run_best_of_n(session: Session, prompt_ids, key):
    from genppl.inference import search

    c = session.config
    reward = None
    if c.task == "arithmetic" and c.prm is None or c.prm == "verifier":
        from genppl.tasks import arithmetic

        reward = arithmetic.step_reward
    program = _search_program(session, prompt_ids)
    if c.prm is not None and c.prm != "verifier":  # pick by the importance weight: log r(x) under the prior
        from genppl import ppl

        factor = ppl.PRMFinalReward(session.reward, session.lm.tokenizer)
        program = _program(session, prompt_ids, factor if session.potential is None else factor * session.potential,
                           None)  # scored once, on the finished text
    return search.best_of_n(program, c.n, key, reward=reward, select=c.select, proposal=c.proposal_fn)


def run_beam(session: Session, prompt_ids, key):
    from genppl.inference import search

    c = session.config
    delimiter = None
    if c.expansions is not None:  # step level: the task's step boundary, else words
        from genppl.tasks import arithmetic

        delimiter = step_delimiter(session.lm, arithmetic.STEP_DELIMITER if c.task in WORD_PROBLEMS
                                   else " ")
    program = _search_program(session, prompt_ids, delimiter)
    if c.prm is not None:  # beams kept by log p + the sum of log step rewards
        factor = step_reward_potential(session)
        program = _program(session, prompt_ids, factor if session.potential is None else factor * session.potential,
                           delimiter)
    return search.beam_search(program, c.n, key, expansions=c.expansions, proposal=c.proposal_fn)


def run_self_consistency(session: Session, prompt_ids, key):
    from genppl.inference import search

    c = session.config
    if c.task in WORD_PROBLEMS:
        from genppl.tasks import arithmetic

        extract = arithmetic.extract_answer
    else:
        def extract(text):
            return text.strip() or None
    return search.self_consistency(_search_program(session, prompt_ids), c.n, key, extract=extract,
                                   proposal=c.proposal_fn)


def run_power_smc_adaptive(session: Session, prompt_ids, key):
    from genppl.inference import power

    c = session.config
    return power.adaptive_power_smc(session.lm, prompt_ids, c.n, c.max_new_tokens, key, alpha=c.alpha,
                                    target_ess=c.target_ess, resampling_fn=c.resampling_fn,
                                    ess_threshold=c.ess_threshold)


_SMC = frozenset({"resampler", "ess_threshold", "proposal", "alpha", "ban", "regex", "grammar", "json_schema"})
_TARGET = frozenset({"alpha", "ban", "regex", "grammar", "json_schema", "proposal"})

#: The method table: name -> :class:`Method` (the order is the order of ``--help``).
METHODS: dict[str, Method] = {
    "sample": Method(run_sample, "plain sampling (models.sample)",
                     frozenset({"temperature", "top_k", "top_p"})),
    "smc": Method(run_smc, "sequential Monte Carlo on p^alpha * phi (inference.smc.run)",
                  _SMC | {"learned", "learned_rank"}),
    "smc-steer": Method(run_smc_steer, "SMC with without-replacement selection (inference.smc.steer)",
                        frozenset({"alpha", "ban", "regex", "grammar", "json_schema"})),
    "pf": Method(run_pf, "step-level reward particle filter (inference.smc.reward_particle_filter)",
                 (_SMC - {"alpha"}) | {"beta", "pf_target", "prm"}),
    "smc-guided": Method(run_smc_guided, "SMC with an HMM x DFA keyword guide (circuits.HMMGuide)",
                         _SMC | {"keywords", "hmm", "hmm_states", "hmm_samples", "hmm_epochs"}),
    "power-mh": Method(run_power_mh, "MH power sampling of p^alpha (inference.mcmc.power_mcmc)",
                       frozenset({"alpha", "block_size", "num_mcmc", "mh_move"}), power=True),
    "power-smc": Method(run_power_smc, "Power-SMC of p^alpha (inference.power.power_smc)",
                        frozenset({"alpha", "resampler", "ess_threshold", "ramp_tokens", "rejuvenate"}),
                        power=True),
    "power-rollout": Method(run_power_rollout, "rollout power sampling of p^alpha (inference.power.power_rollout)",
                            frozenset({"alpha", "rollouts", "rollout_top_k", "horizon", "no_jackknife"}),
                            power=True),
    "pg": Method(run_pg, "particle Gibbs chains on p^alpha * phi (inference.smc.conditional.particle_gibbs)",
                 _TARGET | {"iterations", "particles"}, batched=False),
    "pgas": Method(run_pgas, "particle Gibbs with ancestor sampling (particle_gibbs(ancestor_sampling=True))",
                   _TARGET | {"iterations", "particles"}, batched=False),
    "mh": Method(run_mh, "MH chains on p^alpha * phi, any program (inference.mcmc.program_mh)",
                 _TARGET | {"iterations", "mh_move"}, batched=False),
    "best-of-n": Method(run_best_of_n, "best of n samples by a reward or weight (inference.search.best_of_n)",
                        _TARGET | {"select", "prm"}, batched=False),
    "beam": Method(run_beam, "beam search for the largest p^alpha * phi (inference.search.beam_search)",
                   _TARGET | {"expansions", "prm"}, batched=False),
    "self-consistency": Method(run_self_consistency, "majority vote of n samples (inference.search.self_consistency)",
                               _TARGET, batched=False),
    "power-smc-adaptive": Method(run_power_smc_adaptive, "Power-SMC with adaptive tempering "
                                 "(inference.power.adaptive_power_smc)",
                                 frozenset({"alpha", "resampler", "ess_threshold", "target_ess"}), power=True, batched=False),
}


# ---- what a run shares across prompts ------------------------------------------------------
def prepare(config, lm) -> Session:
    """The session of a run: the potential phi of the SMC methods (built once, so that every
    prompt reuses one compiled sweep), the step delimiter, and the learned guide."""
    from genppl import ppl

    session = Session(lm, config)
    if config.method not in ("smc", "smc-steer", "pf", "smc-guided", "pg", "pgas", "mh", "best-of-n", "beam",
                             "self-consistency"):
        return session
    factors = []
    if config.task in WORD_PROBLEMS and config.method in ("smc", "smc-steer", "pf"):
        from genppl.tasks import arithmetic

        session.step_delimiter = step_delimiter(lm, arithmetic.STEP_DELIMITER)
        if config.method in ("smc", "smc-steer"):  # pf's reward comes from reward_particle_filter
            factors.append(ppl.StepVerifier(arithmetic.equations_hold, lm.tokenizer))
    if config.ban and config.method != "smc-guided":  # smc-guided: in guided_potential
        factors.append(ppl.BannedStrings(list(config.ban), lm))
    if config.regex is not None and config.method != "smc-guided":  # smc-guided: in the guide's DFA
        factors.append(ppl.Regex(config.regex, lm))
    factors += structured_potentials(config, lm)
    for f in factors:
        session.potential = f if session.potential is None else session.potential * f
    if config.learned is not None:
        session.learned = learned_guide(lm, config.learned, config.learned_rank)
    if getattr(config, "prm", None) is not None:
        session.reward = load_reward(config.prm)
    return session


def load_reward(spec: str):
    """The reward of ``--prm``: ``verifier`` -> ``tasks.arithmetic.step_reward`` (a host
    function of texts); ``prm`` -> the bundled trained PRM; else the PRM checkpoint at ``spec``."""
    if spec == "verifier":
        from genppl.tasks import arithmetic

        return arithmetic.step_reward
    from genppl import models

    return models.load_prm(None if spec == "prm" else spec)


def step_reward_potential(session: Session):
    """pi ∝ p prod_k r(x_<=k) for the session's reward (``ppl.PRMReward`` for a trained PRM,
    ``ppl.StepReward`` for a host function)."""
    from genppl import models, ppl

    if isinstance(session.reward, models.ProcessRewardModel):
        return ppl.PRMReward(session.reward, session.lm.tokenizer)
    return ppl.StepReward(session.reward, session.lm.tokenizer)


def structured_potentials(config, lm) -> list:
    """``--grammar FILE`` and ``--json-schema FILE`` as potentials (errors name the file and the
    position or JSON path inside it)."""
    from genppl import ppl

    out = []
    for name, build in (("grammar", ppl.Grammar), ("json_schema", ppl.JSONSchema)):
        path = getattr(config, name, None)
        if path is None:
            continue
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            out.append(build(text, lm))
        except InputError as err:
            raise InputError(f"--{name.replace('_', '-')} {path}: {err}") from None
        except (OSError, UnicodeDecodeError) as err:
            raise InputError(f"--{name.replace('_', '-')} {path}: cannot read it ({err})") from None
    return out


def learned_guide(lm, path, rank: int):
    """The guide of ``--learned PATH`` (a LoRA proposal) and its parameters from the training
    checkpoint, checked against the LoRA's shapes."""
    from genppl import models
    from genppl.inference import variational

    guide = variational.Guide(proposal=models.LoRA(lm, rank=rank))
    try:
        return guide, variational.load_guide_params(path, guide)
    except InputError:
        raise
    except Exception as err:  # a corrupt file: name it, whatever the reader raised
        raise InputError(f"--learned {path}: cannot read this training checkpoint ({type(err).__name__}: {err}); "
                         "write one with examples/learned_proposal.py --save PATH") from err


def guided_potential(session: Session, prompt_ids):
    """The HMM x DFA guide of ``--method smc-guided`` (circuits.HMMGuide): an HMM loaded from
    ``--hmm`` or distilled from the LM's continuations of the prompt (once per prompt, kept
    in ``session.guides``), and the DFA of ``--keywords`` (and ``--regex``); ``--ban``
    strings are an extra factor."""
    import jax

    from genppl import circuits, ppl

    c, lm = session.config, session.lm
    key = tuple(int(i) for i in prompt_ids)
    if key not in session.guides:
        if c.hmm is not None:
            hmm = circuits.HMM.load(c.hmm)
        else:
            hmm, _ = circuits.distill_hmm(lm, prompt_ids, c.hmm_states, num_samples=c.hmm_samples,
                                          max_new_tokens=c.max_new_tokens, key=jax.random.key(c.seed),
                                          em_epochs=c.hmm_epochs)
        tdfa = circuits.constraint_dfa(lm, keywords=c.keywords or (), regex=c.regex)
        potential = circuits.HMMGuide(hmm, tdfa, c.max_new_tokens)
        if c.ban:
            potential = potential * ppl.BannedStrings(list(c.ban), lm)
        session.guides[key] = potential
    return session.guides[key]


def step_delimiter(lm, delimiter: str) -> str:
    """The step boundary to give a Program for ``delimiter``.

    A program ends a step after a token whose bytes contain the delimiter. Byte-level BPE
    tokenizers glue a space to the word after it, so no token may contain ``". "``; the step
    then ends at the token holding ``"."`` (the same boundary: the space opens the next step).
    """
    if any(delimiter.encode() in b for b in lm.tokenizer.token_bytes):
        return delimiter
    stripped = delimiter.strip()
    if stripped and any(stripped.encode() in b for b in lm.tokenizer.token_bytes):
        return stripped
    raise InputError(f"no token of this tokenizer contains the step delimiter {delimiter!r}")


def encode_prompt(lm, text: str) -> list[int]:
    """Token ids of a prompt: the document separator (BOS, else EOS) and then the text."""
    tok = lm.tokenizer
    start = tok.bos_id if tok.bos_id is not None else lm.eos_id
    return [start] + tok.encode(text)
