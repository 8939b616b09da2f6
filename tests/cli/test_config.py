"""cli.config: parsing into a frozen RunConfig, defaults, and one-line errors (no model runs)."""

import dataclasses

import pytest

from genppl.cli.config import RunConfig, build_parser, config_from_args, parse_args
from genppl.cli.main import main
from genppl.cli.methods import METHODS


def test_defaults_are_resolved_once():
    c = parse_args([])
    assert isinstance(c, RunConfig)
    assert (c.method, c.task, c.problems, c.n, c.max_new_tokens) == ("sample", "arithmetic", 16, 8, 96)
    assert c.temperature == 1.0 and c.alpha is None and c.resampler is None  # sample takes no alpha
    assert parse_args(["--task", "sentences"]).max_new_tokens == 32
    free = parse_args(["--prompt", "the cat"])
    assert (free.task, free.problems, free.max_new_tokens) == ("prompt", 1, 32)
    smc = parse_args(["--method", "smc"])
    assert (smc.resampler, smc.proposal, smc.ess_threshold, smc.alpha, smc.ban) == ("systematic", "optimal", 0.5,
                                                                                  1.0, ())
    assert smc.temperature is None
    pf = parse_args(["--method", "pf"])
    assert (pf.ess_threshold, pf.alpha, pf.beta, pf.pf_target) == (1.0, 1.0, 1.0, "final")
    rollout = parse_args(["--method", "power-rollout", "--no-jackknife"])
    assert rollout.jackknife is False and parse_args(["--method", "power-rollout"]).jackknife is True


def test_alpha_defaults():
    assert parse_args(["--method", "power-mh"]).alpha == 4.0
    assert parse_args(["--method", "smc"]).alpha == 1.0
    assert parse_args(["--method", "power-smc", "--alpha", "2"]).alpha == 2.0


def test_config_is_frozen_and_args_are_not_written():
    args = build_parser().parse_args(["--method", "smc"])
    before = dict(vars(args))
    config = config_from_args(args)
    assert vars(args) == before  # no defaults or caches written back
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.n = 3
    assert hash(config) == hash(config_from_args(args))


def test_names_map_to_library_functions():
    from genppl import ppl
    from genppl.inference import mcmc, smc

    c = parse_args(["--method", "smc", "--resampler", "residual", "--proposal", "prior"])
    assert c.resampling_fn is smc.residual and c.proposal_fn == ppl.proposals.prior()
    assert parse_args(["--method", "smc"]).proposal_fn == ppl.proposals.locally_optimal()
    for name in ("systematic", "multinomial", "stratified"):
        assert parse_args(["--method", "pf", "--resampler", name]).resampling_fn is getattr(smc, name)
    assert parse_args(["--method", "power-mh", "--mh-move", "independent"]).mh_move_fn == mcmc.moves.independent()
    assert parse_args(["--method", "power-mh"]).mh_move_fn == mcmc.moves.suffix()
    assert parse_args([]).resampling_fn is None and parse_args([]).proposal_fn is None


def test_help_lists_every_method(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in METHODS)


BAD = [
    # (argv, part of the message)
    (["--method", "smc", "--temperature", "0.5"], "--temperature applies to --method sample"),
    (["--method", "pf", "--task", "sentences"], "needs a word-problem task"),
    (["--method", "pf", "--prompt", "the"], "needs a word-problem task"),
    (["--method", "smc", "--ess-threshold", "1.5"], "--ess-threshold must lie in [0, 1]"),
    (["--method", "smc", "--alpha", "0"], "--alpha must be a positive number"),
    (["--method", "smc", "--alpha", "inf"], "--alpha must be a positive number"),
    (["--method", "smc", "--alpha", "nan"], "--alpha must be a positive number"),
    (["--n", "0"], "--n must be a positive integer"),
    (["--max-new-tokens", "-3"], "--max-new-tokens must be a positive integer"),
    (["--show", "-1"], "--show must be >= 0"),
    (["--seed", str(2**70)], "--seed must lie in"),
    (["--ban", "e"], "add --method smc"),
    (["--method", "bogus"], "invalid choice"),
    (["--n", "x"], "invalid int value"),
    # power sampling
    (["--method", "power-mh", "--block-size", "0"], "--block-size must be an integer >= 1"),
    (["--method", "power-mh", "--num-mcmc", "-1"], "--num-mcmc must be an integer >= 0"),
    (["--method", "power-smc", "--rejuvenate", "1", "--ramp-tokens", "4"], "needs a constant alpha"),
    (["--method", "power-mh", "--ban", "e"], "samples p^alpha alone"),
    (["--method", "power-rollout", "--temperature", "0.5"], "--temperature applies to --method sample"),
    (["--method", "power-mh", "--alpha", "0"], "--alpha must be a positive number"),
    # smc-guided
    (["--method", "smc", "--keywords", "dog"], "apply to --method smc-guided"),
    (["--method", "smc", "--hmm-states", "3"], "apply to --method smc-guided"),
    (["--method", "smc-guided"], "needs a constraint"),
    (["--method", "smc-guided", "--keywords", "dog", "--hmm", "/no/such.npz"], "no such file"),
    (["--method", "smc-guided", "--keywords", "dog", "--hmm-states", "0"], "--hmm-states"),
    # --learned
    (["--method", "sample", "--learned", "/no/such.npz"], "--learned applies to --method smc"),
    (["--method", "smc", "--learned", "/no/such.npz"], "--learned /no/such.npz: no such checkpoint"),
    (["--method", "smc", "--learned-rank", "0"], "--learned-rank must be a positive integer"),
    (["--method", "smc", "--learned", __file__, "--proposal", "prior"], "replaces --proposal: drop one"),
    # options a method does not take are errors, not silently ignored
    (["--alpha", "2"], "--alpha applies to the SMC and power methods"),
    (["--method", "pf", "--alpha", "2"], "use --beta"),
    (["--method", "smc", "--beta", "2"], "--beta applies to --method pf, not --method smc"),
    (["--method", "smc-steer", "--ess-threshold", "0.3"], "smc-steer selects among all children"),
    (["--method", "smc-steer", "--resampler", "multinomial"], "--resampler applies to"),
    (["--method", "power-mh", "--resampler", "multinomial"], "not --method power-mh"),
    (["--method", "power-rollout", "--block-size", "2"], "--block-size applies to --method power-mh"),
    (["--task", "sentences", "--prompt", "S:"], "--task and --prompt exclude each other"),
    (["--problems", "3", "--prompt", "S:"], "drop it with --prompt"),
    (["--method", "smc", "--ban", ""], "--ban needs a non-empty string"),
    (["--method", "smc", "--regex", "a(b"], "regex"),
    (["--method", "smc", "--grammar", "/no/such.lark"], "--grammar /no/such.lark: no such file"),
    (["--method", "smc", "--json-schema", "/no/such.json"], "--json-schema /no/such.json: no such file"),
    (["--json-schema", "/no/such.json"], "--json-schema constrains the generation"),
    (["--method", "power-smc", "--grammar", "g.lark"], "drop --ban/--regex"),
    (["--temperature", "0"], "--temperature: temperature must be a positive number"),
    (["--top-p", "2"], "--top-p: top_p must lie in (0, 1]"),
    (["--top-k", "0"], "--top-k: top_k must be a positive integer"),
    # text that is not UTF-8: the shell hands undecodable bytes over as lone surrogates
    (["--prompt", "a\udcff"], "--prompt holds the byte 0xff, which is not UTF-8, at character 1"),
    (["--prompt", "\ud800"], "--prompt holds a lone surrogate U+D800"),
    (["--method", "smc", "--ban", "\udce9"], "--ban holds the byte 0xe9"),
    (["--method", "smc-guided", "--keywords", "dog", "\udcff"], "--keywords holds the byte 0xff"),
]


@pytest.mark.parametrize("argv, message", BAD)
def test_bad_options_exit_2_with_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "genppl: error:" in err and message in err
    assert err.startswith("genppl: error:") and err.count("\n") == 1 and "Traceback" not in err


def test_non_utf8_prompt_from_the_shell():
    import os
    import subprocess
    import sys

    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-m", "genppl.cli", "--prompt", os.fsdecode(b"\xff")],
                         capture_output=True, env=env, timeout=120)
    assert out.returncode == 2
    assert out.stderr.decode().startswith("genppl: error: --prompt holds the byte 0xff")
    assert out.stderr.count(b"\n") == 1 and out.stdout == b""


def test_multi_process_flags_come_together_and_are_checked(capsys):
    c = parse_args(["--coordinator", "127.0.0.1:1234", "--num-processes", "2", "--process-id", "1"])
    assert (c.coordinator, c.num_processes, c.process_id) == ("127.0.0.1:1234", 2, 1)
    assert parse_args([]).coordinator is None
    for argv, message in ((["--coordinator", "127.0.0.1:1234"], "needs all of --coordinator"),
                          (["--coordinator", "host", "--num-processes", "2", "--process-id", "0"], "HOST:PORT"),
                          (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"], "--process-id must")):
        with pytest.raises(SystemExit) as exit_:
            parse_args(argv)
        assert exit_.value.code == 2 and message in capsys.readouterr().err
@pytest.mark.parametrize("argv, message", [
    (["--method", "sample", "--prm", "prm"], "--prm applies to --method pf, best-of-n, beam"),
    (["--method", "pf", "--prm", "/no/such/prm"], "--prm /no/such/prm: not 'verifier', 'prm'"),
    (["--method", "best-of-n", "--task", "sentences", "--prm", "verifier"], "--prm scores worked solutions"),
    (["--method", "beam", "--prm", "verifier"], "give beam search --expansions K"),
    (["--task", "bogus"], "invalid choice"),
])
def test_task_and_prm_options(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("genppl: error:") and message in err and err.count("\n") == 1


def test_task_and_prm_defaults():
    assert parse_args(["--method", "pf"]).prm == "verifier"  # the step checks, as before --prm existed
    assert parse_args(["--method", "best-of-n"]).prm is None
    assert parse_args(["--method", "pf", "--prm", "prm"]).prm == "prm"
    multistep = parse_args(["--task", "multistep"])
    assert multistep.max_new_tokens == 144 and multistep.task == "multistep"
