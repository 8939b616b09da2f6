"""Command-line parsing and the frozen :class:`RunConfig` of one ``genppl`` run.

The arguments are parsed once, every default is resolved and every value checked here, in
:func:`config_from_args`; nothing downstream writes to the configuration. A bad input raises
:class:`~genppl.models.interface.InputError`, which :func:`parse_args` turns into one line
``genppl: error: ...`` on stderr and exit code 2 (no usage block, no traceback).

Names map to library functions only here: ``--resampler NAME`` -> ``inference.smc.NAME``,
``--proposal NAME`` -> ``ppl.proposals.*``, ``--mh-move NAME`` -> ``inference.mcmc.moves.*``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os

from genppl.models.interface import InputError

from .methods import METHODS, WORD_PROBLEMS

__all__ = ["MH_MOVES", "PROPOSALS", "RESAMPLERS", "RunConfig", "build_parser", "config_from_args", "parse_args"]

DESCRIPTION = """\
genppl: generate with a chosen method on a task, and summarise.

    genppl                                   # plain sampling on the bundled model's arithmetic task
    genppl --task sentences --n 8            # keyword-free sentences
    genppl --prompt "S: the dog" --n 4       # any prompt
    genppl --model path/to/hf-checkpoint --prompt "Hello" --max-new-tokens 32
    genppl --method smc --n 16               # SMC: every worked equation must hold, weighted vote
    genppl --method smc-steer --n 16         # SMC-steer (without-replacement selection)
    genppl --method pf --n 16                # step-level particle filter, step checks as reward
    genppl --method smc --task sentences --ban e --ban E     # sentences without the letter e
    genppl --method smc --prompt "S:" --regex " the [a-z]+ [a-z]+s\\."
    genppl --method power-mh --n 4           # MH power sampling of p^alpha (alpha 4 by default)
    genppl --method power-smc --n 16         # Power-SMC; --rejuvenate 1 adds MH moves
    genppl --method power-rollout --n 4 --horizon 16   # rollout estimates of the future
    genppl --method smc-guided --task sentences --keywords dog ball park --n 16   # HMM x DFA guide
    genppl --method smc --prompt "S:" --learned proposal.npz   # SMC with a learned LoRA proposal
    genppl --method pgas --task sentences --n 4 --iterations 8   # particle Gibbs chains (R-hat, ESS)
    genppl --method best-of-n --n 8          # best of 8 samples by the task's reward
    genppl --method beam --task sentences --n 4                  # token-level beam search, width 4
    genppl --task chains --method pf --prm prm --n 16            # harder task, the trained PRM as reward
    genppl --method power-smc-adaptive --n 16 --target-ess 0.7  # Power-SMC, exponents by conditional ESS

The SMC methods target p(x)^alpha * phi(x). On the arithmetic task phi is a step verifier
(tasks.arithmetic.equations_hold: a particle dies at the first worked equation that does not
hold), and the answer of a problem is the weighted vote of its particles. --ban and --regex
multiply token-level constraints into phi on any task. Options that a method does not take
are errors (e.g. --alpha with --method sample: plain sampling draws from p token by token;
use --temperature there, or a power method for p^alpha)."""

#: ``--resampler`` names -> the resampling functions of ``inference.smc``
RESAMPLERS = ("systematic", "multinomial", "stratified", "residual")
#: ``--proposal`` names -> constructors in ``ppl.proposals``
PROPOSALS = {"optimal": "locally_optimal", "prior": "prior"}
#: ``--mh-move`` names -> constructors in ``inference.mcmc.moves``
MH_MOVES = ("suffix", "independent")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything one run needs, resolved and checked. Options a method does not take are
    ``None`` (except ``alpha`` of ``pf``, 1.0: its target is p(x) r(x)^beta)."""

    method: str = "sample"
    model: str | None = None
    dtype: str = "float32"
    task: str = "arithmetic"          # "arithmetic", "chains", "multistep", "sentences", or "prompt" (with --prompt)
    prompt: str | None = None
    problems: int = 16                # prompts of the task (1 with --prompt)
    n: int = 8
    max_new_tokens: int = 96
    seed: int = 0
    show: int = 3
    json: bool = False
    record: str | None = None         # --record PATH: a replayable run record per prompt
    # sample
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    # SMC methods and the power methods
    alpha: float | None = None
    resampler: str | None = None
    ess_threshold: float | None = None
    proposal: str | None = None
    ban: tuple[str, ...] = ()
    regex: str | None = None
    grammar: str | None = None        # a file of Lark EBNF (ppl.Grammar)
    json_schema: str | None = None    # a JSON Schema file (ppl.JSONSchema)
    # pf
    beta: float | None = None
    pf_target: str | None = None
    prm: str | None = None            # pf, best-of-n, beam: "verifier", "prm" (bundled PRM) or a PRM directory
    # power-mh, power-smc, power-rollout
    block_size: int | None = None
    num_mcmc: int | None = None
    mh_move: str | None = None
    ramp_tokens: int | None = None
    rejuvenate: int | None = None
    rollouts: int | None = None
    rollout_top_k: int | None = None
    horizon: int | None = None
    jackknife: bool | None = None
    # smc --learned
    learned: str | None = None
    learned_rank: int | None = None
    # smc-guided
    keywords: tuple[str, ...] | None = None
    hmm: str | None = None
    hmm_states: int | None = None
    hmm_samples: int | None = None
    hmm_epochs: int | None = None
    # pg, pgas, mh (chains), best-of-n, beam
    iterations: int | None = None
    particles: int | None = None
    select: str | None = None
    expansions: int | None = None
    # power-smc-adaptive
    target_ess: float | None = None
    # multi-process runs (genppl.distributed.launch): all three or none
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None

    @property
    def is_power(self) -> bool:
        return METHODS[self.method].power

    @property
    def resampling_fn(self):
        """``inference.smc.<resampler>``."""
        from genppl.inference import smc

        return None if self.resampler is None else getattr(smc, self.resampler)

    @property
    def proposal_fn(self):
        """``ppl.proposals.<proposal>()``."""
        from genppl.ppl import proposals

        return None if self.proposal is None else getattr(proposals, PROPOSALS[self.proposal])()

    @property
    def mh_move_fn(self):
        """``inference.mcmc.moves.<mh_move>()``."""
        from genppl.inference.mcmc import moves

        return None if self.mh_move is None else getattr(moves, self.mh_move)()


# ---- the parser ---------------------------------------------------------------------------
class Parser(argparse.ArgumentParser):
    """argparse, with errors on one line: ``genppl: error: ...`` and exit code 2."""

    def error(self, message):
        message = " ".join(str(message).split())
        self.exit(2, f"{self.prog}: error: {message} (genppl --help lists the options)\n")


def build_parser() -> Parser:
    p = Parser(prog="genppl", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="local Hugging Face checkpoint directory (default: bundled)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--method", default="sample", choices=list(METHODS),
                   help="; ".join(f"{name}: {m.help}" for name, m in METHODS.items()))
    p.add_argument("--task", default=None, choices=list(TASKS),
                   help="evaluation task (default arithmetic; chains: the longer word problems, on the "
                        "'reasoner' model unless --model; multistep: harder still; not with --prompt)")
    p.add_argument("--prompt", default=None, help="generate from this text instead of a task")
    p.add_argument("--problems", type=int, default=None, help="number of task prompts (default 16)")
    p.add_argument("--n", type=int, default=8, help="samples (particles) per prompt")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: 96 (arithmetic), 32 otherwise")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--show", type=int, default=3, help="samples to print")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--record", metavar="PATH", default=None,
                   help="write a run record (.npz) that genppl.inference.replay reruns and checks; with "
                        "several prompts, one file per prompt (PATH.0.npz, PATH.1.npz, ...)")
    sample = p.add_argument_group("plain sampling (sample)")
    sample.add_argument("--temperature", type=float, default=None, help="sampling temperature (default 1)")
    sample.add_argument("--top-k", type=int, default=None)
    sample.add_argument("--top-p", type=float, default=None)
    smc = p.add_argument_group("SMC methods (smc, smc-steer, pf, smc-guided)")
    smc.add_argument("--resampler", default=None, choices=list(RESAMPLERS),
                     help="inference.smc.<name> (default systematic; not smc-steer)")
    smc.add_argument("--ess-threshold", type=float, default=None,
                     help="resample when ESS < this * n (default 0.5; 1.0 for pf: whenever the weights differ)")
    smc.add_argument("--proposal", default=None, choices=list(PROPOSALS),
                     help="optimal (default): q ∝ p^alpha * token-level constraints "
                          "(ppl.proposals.locally_optimal); prior: the LM itself (ppl.proposals.prior)")
    smc.add_argument("--alpha", type=float, default=None,
                     help="target p(x)^alpha * phi(x) (default 1; 4 for the power methods; not sample, not pf)")
    smc.add_argument("--ban", action="append", default=None, metavar="STRING",
                     help="a string the generation may never contain (repeatable; ppl.BannedStrings)")
    smc.add_argument("--regex", default=None, help="the generation must match this regex (ppl.Regex)")
    smc.add_argument("--grammar", default=None, metavar="FILE",
                     help="the generation must parse under this Lark grammar (ppl.Grammar, start rule 'start')")
    smc.add_argument("--json-schema", default=None, metavar="FILE",
                     help="the generation must be JSON valid under this schema (ppl.JSONSchema)")
    smc.add_argument("--beta", type=float, default=None, help="pf: reward exponent (default 1)")
    smc.add_argument("--prm", default=None, metavar="REWARD",
                     help="pf, best-of-n, beam: the step reward: verifier (the arithmetic step checks; default of "
                          "pf), prm (the bundled trained process reward model, which reads the question) or a PRM "
                          "checkpoint directory")
    smc.add_argument("--pf-target", default=None, choices=["final", "product"],
                     help="pf: p(x) r(x)^beta (final, default; reward_particle_filter(final=True)) or "
                          "p(x) prod_k r(x_<=k)^beta (product: final=False)")
    power = p.add_argument_group("power sampling of p(x)^alpha (power-mh, power-smc, power-rollout; "
                                 "--alpha defaults to 4; power-smc also takes --resampler, --ess-threshold)")
    power.add_argument("--block-size", type=int, default=None, help="power-mh: tokens per block B (default 16)")
    power.add_argument("--num-mcmc", type=int, default=None, help="power-mh: MH steps per block (default 4)")
    power.add_argument("--mh-move", default=None, choices=list(MH_MOVES),
                       help="power-mh: regenerate from a uniform position (suffix, default), or from the prompt")
    power.add_argument("--ramp-tokens", type=int, default=None, help="power-smc: ramp alpha up over these tokens")
    power.add_argument("--target-ess", type=float, default=None,
                       help="power-smc-adaptive: conditional ESS each exponent step keeps, in (0, 1) (default 0.5)")
    power.add_argument("--rejuvenate", type=int, default=None, help="power-smc: MH moves after each resampling")
    power.add_argument("--rollouts", type=int, default=None, help="power-rollout: rollouts M per candidate (default 4)")
    power.add_argument("--rollout-top-k", type=int, default=None, help="power-rollout: candidate tokens K (default 4)")
    power.add_argument("--horizon", type=int, default=None, help="power-rollout: rollout length (default: to the end)")
    power.add_argument("--no-jackknife", action="store_true", default=None,
                       help="power-rollout: plain (biased) zeta estimate")
    chains = p.add_argument_group("MCMC chains and search baselines (pg, pgas, mh: --n chains; best-of-n, "
                                  "self-consistency: --n samples; beam: --n beams)")
    chains.add_argument("--iterations", type=int, default=None, help="pg, pgas, mh: iterations per chain (default 8)")
    chains.add_argument("--particles", type=int, default=None,
                        help="pg, pgas: conditional-SMC particles per iteration (default 8)")
    chains.add_argument("--select", default=None, choices=["argmax", "weighted"],
                        help="best-of-n: the top score, or a draw by weight (default argmax)")
    chains.add_argument("--expansions", type=int, default=None,
                        help="beam: sampled next steps per beam (step level; default: every token)")
    learned = p.add_argument_group("learned proposal (smc; train one with examples/learned_proposal.py --save PATH)")
    learned.add_argument("--learned", default=None, metavar="PATH",
                         help="smc: propose with the LoRA adapter of this training checkpoint (.npz)")
    learned.add_argument("--learned-rank", type=int, default=None, help="the LoRA rank it was trained with (default 4)")
    guided = p.add_argument_group("HMM-guided SMC (smc-guided: an HMM distilled from the LM x a keyword DFA; "
                                  "also takes --resampler, --ess-threshold, --proposal, --alpha, --regex, --ban)")
    guided.add_argument("--keywords", nargs="+", default=None, metavar="WORD",
                        help="smc-guided: every one of these words must appear (whole words, any order)")
    guided.add_argument("--hmm", default=None, metavar="PATH", help="smc-guided: load this HMM (.npz) "
                        "instead of distilling one")
    guided.add_argument("--hmm-states", type=int, default=None, help="smc-guided: hidden states to distil (default 32)")
    guided.add_argument("--hmm-samples", type=int, default=None, help="smc-guided: LM samples to distil from (default 2048)")
    guided.add_argument("--hmm-epochs", type=int, default=None, help="smc-guided: EM epochs (default 5)")
    multi = p.add_argument_group("multi-process runs (jax.distributed: start the same command once per process; "
                                 "sample and smc run over a mesh of every process's devices, process 0 prints)")
    multi.add_argument("--coordinator", default=None, metavar="HOST:PORT", help="process 0's address and a free port")
    multi.add_argument("--num-processes", type=int, default=None, metavar="K", help="how many processes take part")
    multi.add_argument("--process-id", type=int, default=None, metavar="I", help="this process's index, 0 .. K-1")
    return p


def parse_args(argv=None) -> RunConfig:
    """The :class:`RunConfig` of ``argv``; a bad input exits with code 2 and one line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return config_from_args(args)
    except InputError as err:
        parser.error(str(err))


# ---- defaults and checks ------------------------------------------------------------------
#: defaults of the method-specific options (used only by the methods that take them)
DEFAULTS = {
    "temperature": 1.0, "resampler": "systematic", "proposal": "optimal", "ban": (),
    "beta": 1.0, "pf_target": "final", "block_size": 16, "num_mcmc": 4, "mh_move": "suffix", "ramp_tokens": 0,
    "rejuvenate": 0, "rollouts": 4, "rollout_top_k": 4, "learned_rank": 4, "hmm_states": 32,
    "hmm_samples": 2048, "hmm_epochs": 5, "iterations": 8, "particles": 8, "select": "argmax",
    "target_ess": 0.5,
}
#: the tasks of --task: name -> default max_new_tokens (word problems write worked equations)
TASKS = {"arithmetic": 96, "chains": 112, "multistep": 144, "sentences": 32}
#: method-specific options (argparse dests): each must be taken by the chosen method when given
OPTIONS = ("temperature", "top_k", "top_p", "alpha", "resampler", "ess_threshold", "proposal", "ban", "regex",
           "beta", "pf_target", "block_size", "num_mcmc", "mh_move", "ramp_tokens", "rejuvenate", "rollouts",
           "rollout_top_k", "horizon", "no_jackknife", "learned", "learned_rank", "keywords", "hmm", "hmm_states",
           "hmm_samples", "hmm_epochs", "iterations", "particles", "select", "expansions", "target_ess",
           "grammar", "json_schema", "prm")
#: text options, checked to be valid UTF-8
TEXTS = ("prompt", "regex", "ban", "keywords")


def flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Resolve the defaults of ``args`` and check every value; raises InputError with a
    message that says what to change. ``args`` is not modified."""
    method = METHODS[args.method]
    check_texts(args)
    for dest in OPTIONS:
        if getattr(args, dest) is not None and dest not in method.options:
            raise InputError(not_taken(dest, args))
    if args.prompt is not None and args.task is not None:
        raise InputError("--task and --prompt exclude each other: give a task (its prompts) or a prompt")
    if args.prompt is not None and args.problems is not None:
        raise InputError("--problems counts task prompts: drop it with --prompt")
    task = "prompt" if args.prompt is not None else (args.task or "arithmetic")
    values = {"method": args.method, "model": args.model, "dtype": args.dtype, "task": task, "prompt": args.prompt,
              "problems": 1 if args.prompt is not None else (16 if args.problems is None else args.problems),
              "n": args.n, "max_new_tokens": args.max_new_tokens, "seed": args.seed, "show": args.show,
              "json": bool(args.json), "record": args.record}
    for name in ("problems", "n", "max_new_tokens"):
        if values[name] is not None and values[name] < 1:
            raise InputError(f"{flag(name)} must be a positive integer, got {values[name]}")
    if values["max_new_tokens"] is None:
        values["max_new_tokens"] = TASKS.get(task, 32)
    if task in ("chains", "multistep") and args.model is None:
        from genppl import models

        if models.bundled_path("reasoner").is_dir():  # the policy trained on the harder task
            values["model"] = "reasoner"
    if args.show < 0:
        raise InputError(f"--show must be >= 0, got {args.show}")
    if not -(2**63) <= args.seed < 2**63:
        raise InputError(f"--seed must lie in [-2**63, 2**63), got {args.seed}")
    # the method's own options: given values, else the defaults
    for dest in method.options:
        value = getattr(args, dest)
        if dest == "no_jackknife":
            values["jackknife"] = not value
        elif dest in ("ban", "keywords"):
            values[dest] = tuple(value) if value is not None else DEFAULTS.get(dest)
        else:
            values[dest] = value if value is not None else DEFAULTS.get(dest)
    if "alpha" in method.options and values["alpha"] is None:
        values["alpha"] = 4.0 if method.power else 1.0
    if args.method == "pf":
        values["alpha"] = 1.0  # its target is p(x) r(x)^beta
        if values["prm"] is None:
            values["prm"] = "verifier"
    if "ess_threshold" in method.options and values["ess_threshold"] is None:
        values["ess_threshold"] = 1.0 if args.method == "pf" else 0.5
    values.update(multi_process(args))
    config = RunConfig(**values)
    check(config, vars(args))
    return config


def multi_process(args) -> dict:
    """``--coordinator``, ``--num-processes``, ``--process-id``: all three or none, checked."""
    given = {k: getattr(args, k, None) for k in ("coordinator", "num_processes", "process_id")}
    if all(v is None for v in given.values()):
        return {}
    if any(v is None for v in given.values()):
        raise InputError("a multi-process run needs all of --coordinator HOST:PORT, --num-processes K and "
                         "--process-id I (the same first two in every process)")
    from genppl.distributed.launch import parse_coordinator

    parse_coordinator(given["coordinator"])
    if given["num_processes"] < 1 or not 0 <= given["process_id"] < given["num_processes"]:
        raise InputError(f"--process-id must lie in 0 .. --num-processes - 1 and --num-processes must be >= 1, "
                         f"got --process-id {given['process_id']} --num-processes {given['num_processes']}")
    return given


def check_texts(args) -> None:
    """Text options must be valid UTF-8 (the shell passes undecodable bytes through as lone
    surrogates, which no tokenizer can encode)."""
    for dest in TEXTS:
        value = getattr(args, dest)
        for text in ([value] if isinstance(value, str) else value or ()):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as err:
                char = ord(text[err.start])
                what = (f"the byte 0x{char - 0xDC00:02x}, which is not UTF-8," if 0xDC80 <= char <= 0xDCFF
                        else f"a lone surrogate U+{char:04X}")
                raise InputError(f"{flag(dest)} holds {what} at character {err.start}: "
                                 "pass the text as UTF-8") from None


def not_taken(dest: str, args) -> str:
    """The message for an option that ``--method args.method`` does not take."""
    method, name = args.method, flag(dest)
    if dest in ("ban", "regex", "grammar", "json_schema") and method == "sample":
        return f"{name} constrains the generation, which plain sampling cannot do: add --method smc"
    if dest in ("ban", "regex", "grammar", "json_schema") and METHODS[method].power:
        return (f"--method {method} samples p^alpha alone: drop --ban/--regex, or use "
                f"--method smc --alpha {args.alpha if args.alpha is not None else 4.0:g} for a constrained power target")
    if dest == "alpha" and method == "sample":
        return ("--alpha applies to the SMC and power methods (targets p(x)^alpha * phi(x)); --method sample "
                "draws from p token by token: drop --alpha, use --temperature for a token-level temperature, "
                "or --method power-smc for p^alpha")
    if dest == "alpha" and method == "pf":
        return "--alpha does not apply to --method pf, whose target is p(x) r(x)^beta: use --beta"
    if dest in ("keywords", "hmm", "hmm_states", "hmm_samples", "hmm_epochs"):
        also = "" if dest in ("keywords", "hmm") else f" (and {name})"
        return f"--keywords and --hmm{also} apply to --method smc-guided, not --method {method}"
    takers = [m for m, row in METHODS.items() if dest in row.options]
    text = f"{name} applies to --method {', '.join(takers)}, not --method {method}"
    if dest in ("temperature", "top_k", "top_p"):
        text += f"; --method {method} targets p^alpha * phi: use --alpha" + ("" if METHODS[method].power
                                                                           else " and --proposal") + " instead"
    elif method == "smc-steer":
        text += ("; smc-steer selects among all children of every particle at every token (no resampler, "
                 "no threshold, no proposal): drop it or use --method smc")
    return text


def check(c: RunConfig, given: dict | None = None) -> None:
    """Value checks of a resolved configuration (ranges and combinations); ``given``: the
    options as given on the command line (None where not given)."""
    given = given or {}
    if c.method == "sample":
        from genppl.models.sampling import Processing

        try:
            Processing(c.temperature, c.top_k, c.top_p)  # the library's own checks of the values
        except InputError as err:  # its message names the Python argument: name the flag instead
            name = str(err).split(" ", 1)[0]
            raise InputError(f"{flag(name)}: {err}" if name in ("temperature", "top_k", "top_p") else str(err)) from None
    if c.method == "pf" and c.task not in WORD_PROBLEMS:
        raise InputError("--method pf scores worked equations, so it needs a word-problem task: "
                         "drop --prompt and use --task arithmetic, chains or multistep (or use --method smc)")
    if c.prm is not None:
        if c.task not in WORD_PROBLEMS:
            raise InputError(f"--prm scores worked solutions of word problems: use --task arithmetic, chains or multistep, "
                             f"not {c.task}")
        if c.prm not in ("verifier", "prm") and not os.path.isdir(c.prm):
            raise InputError(f"--prm {c.prm}: not 'verifier', 'prm' (the bundled PRM) or a PRM checkpoint directory")
        if c.method == "beam" and c.expansions is None:
            raise InputError("--prm scores steps: give beam search --expansions K (step level)")
    if c.ess_threshold is not None and not 0.0 <= c.ess_threshold <= 1.0:
        raise InputError(f"--ess-threshold must lie in [0, 1], got {c.ess_threshold}")
    for name in ("alpha", "beta"):
        value = getattr(c, name)
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise InputError(f"--{name} must be a positive number, got {value}")
    for name, low in (("block_size", 1), ("num_mcmc", 0), ("ramp_tokens", 0), ("rejuvenate", 0),
                      ("rollouts", 1), ("rollout_top_k", 1), ("horizon", 1), ("iterations", 4), ("particles", 2),
                      ("expansions", 1)):
        value = getattr(c, name)
        if value is not None and value < low:
            raise InputError(f"{flag(name)} must be an integer >= {low}, got {value}")
    if c.target_ess is not None and not 0.0 < c.target_ess < 1.0:
        raise InputError(f"--target-ess must lie in (0, 1), got {c.target_ess}")
    if c.rejuvenate and c.ramp_tokens:
        raise InputError("--rejuvenate needs a constant alpha: drop --ramp-tokens or --rejuvenate")
    if any(not s for s in c.ban):
        raise InputError("--ban needs a non-empty string")
    if c.regex is not None:
        from genppl.ppl.automata import parse

        parse(c.regex)  # syntax errors name the position
    for name in ("grammar", "json_schema"):
        path = getattr(c, name)
        if path is not None and not os.path.isfile(path):
            raise InputError(f"{flag(name)} {path}: no such file")
    if c.learned is not None:
        if given.get("proposal") is not None:
            raise InputError("--learned proposes with the trained LoRA adapter, which replaces --proposal: drop one")
        if not os.path.exists(c.learned):
            raise InputError(f"--learned {c.learned}: no such checkpoint; train one with "
                             "examples/learned_proposal.py --save PATH")
    if c.learned_rank is not None and c.learned_rank < 1:
        raise InputError(f"--learned-rank must be a positive integer, got {c.learned_rank}")
    if c.method == "smc-guided":
        if not c.keywords and c.regex is None:
            raise InputError("--method smc-guided needs a constraint: give --keywords WORD ... (or --regex)")
        for name in ("hmm_states", "hmm_samples", "hmm_epochs"):
            if getattr(c, name) < 1:
                raise InputError(f"{flag(name)} must be a positive integer, got {getattr(c, name)}")
        if c.hmm is not None and not os.path.exists(c.hmm):
            raise InputError(f"--hmm {c.hmm}: no such file; save one with circuits.HMM.save "
                             "(or examples/keyword_guided.py --save-hmm PATH)")
