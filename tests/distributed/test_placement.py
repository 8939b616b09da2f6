"""Sharded runs equal one-device runs, bit for bit (global resampling), and their outputs
really are spread over the mesh. Eight simulated CPU devices come from tests/conftest.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from genppl import distributed, models, ppl
from genppl.inference import smc
from genppl.inference.smc.run import sweep_jit
from genppl.models.interface import InputError

DEVICES = 8


@pytest.fixture(scope="module")
def lm():
    return models.TabularLM.random(jax.random.key(0), vocab_size=6, max_len=5, eos_id=0, eos_boost=0.3)


@pytest.fixture(scope="module")
def mesh():
    return distributed.make_mesh(DEVICES)


def program_for(lm, prompt=(1,)):
    return ppl.Program(lm, list(prompt), max_new_tokens=5, potential=ppl.BannedTokens([2]))


def test_random_draws_do_not_depend_on_the_layout(mesh):
    # jax_threefry_partitionable (on by default in jax 0.10): the bits of element i depend on
    # the key and i only, so a draw computed shard by shard equals the one-device draw
    assert jax.config.jax_threefry_partitionable
    key = jax.random.key(7)
    sharded = NamedSharding(mesh, P("data"))
    draw = lambda k: (jax.random.uniform(k, (64, 3)), models.categorical(k, jnp.zeros((64, 11))))
    one = jax.jit(draw)(key)
    spread = jax.jit(draw, out_shardings=(sharded, sharded))(key)
    assert len(spread[0].sharding.device_set) == DEVICES
    for a, b in zip(one, spread):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_smc_on_eight_devices_equals_one_device(lm):
    program = program_for(lm)
    one = smc.run(program, 16, key=3, ess_threshold=1.0, progress=False)
    eight = smc.run(program, 16, key=3, ess_threshold=1.0, progress=False, mesh=DEVICES)
    assert one.num_resampling > 0  # resampling moved particles between devices
    assert eight.token_ids == one.token_ids
    assert eight.log_z == one.log_z  # exact, not approximately
    np.testing.assert_array_equal(eight.log_weights, one.log_weights)
    np.testing.assert_array_equal(eight.ancestors, one.ancestors)
    layout = eight.layout
    assert layout.mesh_shape == {"data": DEVICES, "model": 1} and layout.resampling == "global"
    assert layout.bytes_moved == layout.bytes_moved_per_step.sum() > 0
    assert one.layout is None
    assert layout.sharding.device_set == set(jax.devices()) and layout.sharding.spec == P("data")


@pytest.mark.slow  # a second compilation of the sharded sweep (~4 s); layout.sharding covers it above
def test_sharded_sweep_outputs_span_the_mesh(lm, mesh):
    program = program_for(lm)
    start = smc.init(program, 16)
    start = start.replace(particles=distributed.place(start.particles, mesh),
                          logw=distributed.replicate(start.logw, mesh), step=distributed.replicate(start.step, mesh))
    with distributed.on(mesh):
        # the very call smc.run(program, 16, 3, ess_threshold=1.0, mesh=8) made: no new compilation
        state, infos = sweep_jit(smc.build_kernel(ess_threshold=1.0),
                                 program.replace(lm=distributed.place_model(program.lm, mesh)), start, jax.random.key(3))
    tokens = state.particles.lm.tokens
    assert tokens.sharding.device_set == set(mesh.devices.flat)
    assert tokens.sharding.spec == P("data")  # two particles per device
    assert {s.data.shape for s in tokens.addressable_shards} == {(2, tokens.shape[1])}
    assert state.logw.sharding.is_fully_replicated


@pytest.mark.slow  # two more compiled decode loops (~5 s); the SMC test above covers the same placement
def test_sampling_on_eight_devices_equals_one_device(lm):
    one = models.sample(lm, [1], 16, 5, key=2)
    eight = models.sample(lm, [1], 16, 5, key=2, mesh=DEVICES)
    np.testing.assert_array_equal(eight.token_ids, one.token_ids)
    np.testing.assert_array_equal(eight.log_probs, one.log_probs)
    assert eight.layout.mesh_shape["data"] == DEVICES
    assert eight.layout.sharding.device_set == set(jax.devices())
    # the compiled decode loop's outputs stay split over the 8 devices
    mesh = distributed.make_mesh(DEVICES)
    state = distributed.place(lm.prefill([1], 16, 5), mesh)
    out = models.sampling.generate(lm, state, jax.random.key(2), 5, models.Processing())
    assert all(len(x.sharding.device_set) == DEVICES and x.sharding.spec[0] == "data" for x in out)


@pytest.mark.slow  # four compiled batch programs (~25 s on the 2-core CPU)
def test_a_batch_of_prompts_on_eight_devices_equals_one_device(lm):
    prompts = [[1], [3, 4], [1, 1], [4], [5, 3, 1], [2], [1, 4], [3]]
    programs = [program_for(lm, p) for p in prompts]
    one = smc.run(programs, 4, key=5, ess_threshold=1.0, progress=False)
    eight = smc.run(programs, 4, key=5, ess_threshold=1.0, progress=False, mesh=DEVICES)
    assert eight.token_ids == one.token_ids
    np.testing.assert_array_equal(eight.log_z, one.log_z)
    assert eight[0].layout.split == "prompts"
    plain, spread = models.sample(lm, prompts, 4, 5, key=1), models.sample(lm, prompts, 4, 5, key=1, mesh=DEVICES)
    for a, b in zip(plain, spread):
        np.testing.assert_array_equal(a.token_ids, b.token_ids)


def test_place_model_replicates_the_weights(lm, mesh):
    placed = distributed.place_model(lm, mesh)
    for leaf in jax.tree.leaves(placed):
        assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == DEVICES
    assert distributed.place_model(lm, None) is lm


def test_bad_meshes_and_counts_say_what_to_change(lm):
    program = program_for(lm)
    with pytest.raises(InputError, match=r"n \(the number of particles\)=12 does not split .* 8 devices: use a multiple of 8 \(e.g. 8 or 16\)"):
        smc.run(program, 12, mesh=DEVICES, progress=False)
    wrong = Mesh(np.array(jax.devices()).reshape(4, 2), ("batch", "tp"))
    with pytest.raises(InputError, match="the mesh must have the axes"):
        models.sample(lm, [1], 8, 3, mesh=wrong)
    with pytest.raises(InputError, match="the number of prompts=3 does not split"):
        smc.run([program] * 3, 8, mesh=DEVICES, progress=False)
    with pytest.raises(InputError, match="resampling must be 'global'"):
        smc.run(program, 8, mesh=DEVICES, resampling="local", progress=False)
    with pytest.raises(InputError, match="resampling='island' needs a kernel from smc.build_kernel"):
        smc.run(program, 8, kernel=smc.steer.build_kernel(), mesh=DEVICES, resampling="island", progress=False)
    with pytest.raises(InputError, match="devices=9"):
        smc.run(program, 9, mesh=9, progress=False)


@pytest.mark.slow  # 400 sharded sweeps per scheme (~40 s on the 2-core CPU)
@pytest.mark.parametrize("resampling", ["global", "island"])
def test_sharded_smc_is_unbiased(resampling):
    # 400 independent sweeps of 8 particles on a mesh of 4 devices (islands of 2 particles),
    # against the exact Z and target of an enumerable model; power (see
    # tests/inference/smc/enumeration.py): a 3-standard-error test of E[Z_hat] = Z detects a
    # relative bias of about 3-8 %, the particle measure is checked per sequence within 4 se
    from tests.inference.smc.enumeration import (CAP, TARGET, assert_unbiased_measure, assert_unbiased_z, exact,
                                                 random_lm, sweeps)

    mesh = distributed.make_mesh(4)
    lm = random_lm(1)
    program = ppl.Program(lm, [1], CAP, potential=TARGET)
    seqs, pi, log_z, prior = exact(lm)
    base = smc.systematic if resampling == "global" else smc.island_resampling(smc.systematic, 4)
    kernel = smc.build_kernel(base, ppl.proposals.prior(), 0.9)
    n, runs = 8, 400
    start = smc.init(program, n)
    start = start.replace(particles=distributed.place(start.particles, mesh), logw=distributed.replicate(start.logw, mesh))
    with distributed.on(mesh):
        out = sweeps(kernel, program, start, jax.random.split(jax.random.key(41), runs))
    assert len(out.particles.lm.tokens.sharding.device_set) == 4
    logw = np.asarray(out.logw, np.float64)
    tokens, length, begin = (np.asarray(a) for a in
                             (out.particles.lm.tokens, out.particles.lm.length, out.particles.lm.prompt_length))
    sampled = [[tuple(int(t) for t in tokens[r, i, begin[r, i]:length[r, i]]) for i in range(n)] for r in range(runs)]
    assert_unbiased_z(np.logaddexp.reduce(logw, axis=1) - np.log(n), log_z)
    assert_unbiased_measure(logw, sampled, seqs, pi, log_z, prior)


@pytest.mark.slow  # a tiny Llama compiled four times (~35 s on the 2-core CPU)
def test_a_transformer_on_eight_devices_equals_one_device(tmp_path):
    # the KV cache split over the devices with its particles, the prompt cache replicated: the
    # same tokens, and the same log-probabilities and log Z up to float32 rounding (XLA may use
    # another kernel for a matrix product over one row per device than over eight rows)
    from tests.checkpoints import save_llama

    save_llama(tmp_path)
    lm = models.load(str(tmp_path))
    prompt = [lm.eos_id] + lm.tokenizer.encode("the cat")
    one, eight = models.sample(lm, prompt, 8, 8, key=0), models.sample(lm, prompt, 8, 8, key=0, mesh=DEVICES)
    np.testing.assert_array_equal(eight.token_ids, one.token_ids)
    np.testing.assert_allclose(eight.log_probs, one.log_probs, rtol=1e-6, atol=1e-6)
    program = ppl.Program(lm, prompt, 8, potential=ppl.BannedStrings(["e"], lm))
    one = smc.run(program, 8, key=1, ess_threshold=1.0, progress=False)
    eight = smc.run(program, 8, key=1, ess_threshold=1.0, progress=False, mesh=DEVICES)
    assert one.num_resampling > 0 and eight.token_ids == one.token_ids
    assert abs(eight.log_z - one.log_z) <= 1e-5 * max(1.0, abs(one.log_z))


def _power_smc(lm, mesh):
    from genppl.inference import power
    return power.power_smc(lm, [1], 16, 5, key=1, alpha=2.0, mesh=mesh)


def _adaptive(lm, mesh):
    from genppl.inference import power
    return power.adaptive_power_smc(lm, [1], 16, 5, key=1, mesh=mesh)


def _rollout(lm, mesh):
    from genppl.inference import power
    return power.power_rollout(lm, [1], 8, 4, key=1, alpha=2.0, top_k=3, rollouts=2, mesh=mesh)


def _power_mcmc(lm, mesh):
    from genppl.inference import mcmc
    return mcmc.power_mcmc(lm, [1], 8, 4, key=1, alpha=2.0, block_size=2, mesh=mesh)


def _steer(lm, mesh):
    return smc.run(program_for(lm), 16, 1, kernel=smc.steer.build_kernel(), progress=False, mesh=mesh)


def _particle_filter(lm, mesh):
    reward = lambda texts: [0.2 + 0.6 * (len(t) % 3) / 2 for t in texts]  # host-side, every step
    return smc.reward_particle_filter(lm, [1], reward, 16, 2, max_new_tokens=5, step_delimiter=lm.tokenizer.decode([1]),
                                      mesh=mesh)


@pytest.mark.slow  # each kernel compiled twice (30-50 s each on the loaded 2-core CPU)
@pytest.mark.parametrize("kernel", [_power_smc, _adaptive, _rollout, _power_mcmc, _steer, _particle_filter],
                         ids=lambda f: f.__name__.strip("_"))
def test_every_kernel_on_eight_devices_equals_one_device(lm, kernel):
    one, eight = kernel(lm, None), kernel(lm, DEVICES)
    np.testing.assert_array_equal(np.asarray(eight.token_ids, object), np.asarray(one.token_ids, object))
    if hasattr(one, "log_z"):
        assert eight.log_z == one.log_z
    else:
        np.testing.assert_array_equal(eight.log_probs, one.log_probs)
    assert eight.layout.mesh_shape == {"data": DEVICES, "model": 1} and one.layout is None


@pytest.mark.slow  # two trainers compiled (~45 s on the loaded 2-core CPU)
def test_variational_trainer_on_eight_devices_equals_one_device(lm):
    import optax

    from genppl.inference import variational

    guide = variational.Guide(proposal=models.TabularAdapter(lm))
    program = ppl.Program(lm, [1], 4, alpha=2.0)
    losses, params = [], []
    for mesh in (None, DEVICES):
        trainer = variational.Trainer(variational.trajectory_balance(guide, 8), optax.adam(0.05), program, mesh=mesh)
        state = trainer.init(0)
        for _ in range(3):
            state, loss, _, _ = trainer.step(state)
        losses.append(float(loss))
        params.append(jax.tree.leaves(state.params))
    # the samples split over the devices; the gradient sums over them in another order
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    for a, b in zip(*params):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="the objective's num_samples=6 does not split"):
        variational.Trainer(variational.trajectory_balance(guide, 6), optax.adam(0.05), program, mesh=DEVICES)


@pytest.mark.slow  # two kernels, each compiled on one device and on the mesh (~20 s)
def test_mcmc_chains_on_eight_devices_equal_one_device(lm):
    from genppl.inference import mcmc

    program = ppl.Program(lm, [1], max_new_tokens=4, alpha=2.0)
    for kernel in (smc.conditional.particle_gibbs(2), mcmc.program_mh()):
        one = mcmc.run_chains(program, kernel, 8, 3, key=5, init_particles=8)
        eight = mcmc.run_chains(program, kernel, 8, 3, key=5, init_particles=8, mesh=DEVICES)
        assert eight.draws == one.draws
        np.testing.assert_array_equal(eight.trace_log_p, one.trace_log_p)
        np.testing.assert_array_equal(eight.accepted, one.accepted)
