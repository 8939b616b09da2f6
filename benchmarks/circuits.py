"""Circuits benchmark: our JAX circuits against SPFlow (PyTorch) on CPU, our HMM against a
plain PyTorch HMM, and the per-token cost of HMM-guided decoding on the bundled model.

    pip install -e '.[bench]'          # SPFlow (CPU, torch 2.13.0)
    python benchmarks/circuits.py      # about 5 minutes on two shared cores
    python benchmarks/circuits.py --quick

Three measurements, each a ratio taken side by side in this one run (the machine may be
shared, so absolute times are noisy; each time is the median of several repeats after a
warm-up that includes JIT compilation):

1. **RAT-SPN-style circuit**: ``circuits.random_binary_tree`` (Kronecker products, D
   categorical variables) against SPFlow's ``RatSPN`` with the same shape (depth log2 D,
   outer products, same units per region and repetitions, categorical leaves): the
   log-likelihood throughput (samples / s) and the time of one full-batch EM epoch.
2. **HMM**: ``circuits.log_likelihood`` and one ``circuits.em_step`` against a plain
   PyTorch implementation of the same scaled forward algorithm with autograd for the
   expected counts, written below for this benchmark (not a library).
3. **Guided decoding**: seconds per generated token of ``ppl.Program`` on the bundled model
   with the HMM x DFA guide (a 256-state HMM, the keyword DFA of "dog ball park") against
   the same program with the keyword DFA mask alone and with no potential; each runs a fixed
   number of token steps for a fixed number of particles, round robin. The HMM's parameters
   are random: the cost does not depend on their values.

PyTorch runs with denormals flushed to zero, as XLA does on CPU (``torch.set_flush_denormal``).
"""

from __future__ import annotations

import argparse
import statistics
import time


import jax
import jax.numpy as jnp
import numpy as np

from genppl import circuits


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up (compilation)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def block(x):
    return jax.block_until_ready(x)


# ---- 1. circuits against SPFlow ----------------------------------------------------------------
def bench_rat(num_vars, num_cats, units, reps, n, repeats):
    key = jax.random.key(0)
    circuit = circuits.random_binary_tree(num_vars, num_cats, num_units=units, num_repetitions=reps, key=key)
    params = circuit.init(jax.random.key(1))
    data = np.asarray(jax.random.randint(jax.random.key(2), (n, num_vars), 0, num_cats), np.float32)
    x = jnp.asarray(data)
    ours_ll = median_time(lambda: block(circuit.log_likelihood(params, x)), repeats)
    ours_em = median_time(lambda: block(circuits.circuit_em_step(circuit, params, x)[0]), repeats)
    row = {"ours_params": circuit.num_params, "ours_ll_per_s": n / ours_ll, "ours_em_s": ours_em}
    try:
        import torch
        from spflow.learn.expectation_maximization import expectation_maximization
        from spflow.meta import Scope
        from spflow.modules.leaves import Categorical
        from spflow.zoo.rat.rat_spn import RatSPN
    except ImportError as err:
        row["spflow"] = f"not installed ({err}); pip install -e '.[bench]'"
        return row
    torch.manual_seed(0)
    depth = int(np.log2(num_vars))
    leaf = Categorical(scope=Scope(list(range(num_vars))), out_channels=units, num_repetitions=reps, K=num_cats)
    model = RatSPN([leaf], n_root_nodes=1, n_region_nodes=units, num_repetitions=reps, depth=depth,
                   outer_product=True)
    tx = torch.from_numpy(data)

    def sp_ll():
        with torch.no_grad():
            model.log_likelihood(tx)

    row["spflow_params"] = sum(p.numel() for p in model.parameters())
    row["spflow_ll_per_s"] = n / median_time(sp_ll, repeats)
    row["spflow_em_s"] = median_time(lambda: expectation_maximization(model, tx, max_steps=1), repeats)
    row["torch_threads"] = torch.get_num_threads()
    return row


# ---- 2. HMM against plain PyTorch --------------------------------------------------------------
def torch_hmm_ll_plain(log_init, log_trans, log_emit, tokens, lengths):
    """The forward algorithm in PyTorch, in log space with one matmul per step (the same
    computation as circuits.hmm): log p per sequence."""
    import torch

    n, T = tokens.shape
    trans = log_trans.exp()
    log_alpha = log_init.expand(n, -1)
    last = torch.zeros(n)
    for t in range(T):
        joint = log_alpha + log_emit[:, tokens[:, t]].T
        live = t < lengths
        last = torch.where(live, torch.logsumexp(joint, -1), last)
        shift = joint.max(-1, keepdim=True).values
        nxt = torch.log((joint - shift).exp() @ trans) + shift
        log_alpha = torch.where(live[:, None], nxt, log_alpha)
    return last


def bench_hmm(states, vocab, n, T, repeats):
    import torch

    hmm = circuits.HMM.random(jax.random.key(0), states, vocab)
    tokens, lengths = circuits.sample(hmm, jax.random.key(1), n, T, eos_id=0)
    ours_ll = median_time(lambda: block(circuits.log_likelihood(hmm, tokens, lengths)), repeats)
    ours_em = median_time(lambda: block(circuits.em_step(hmm, tokens, lengths, 1e-3)[0]), repeats)
    params = [torch.tensor(np.asarray(a)) for a in (hmm.log_init, hmm.log_trans, hmm.log_emit)]
    tt, tl = torch.tensor(np.asarray(tokens)).long(), torch.tensor(np.asarray(lengths))
    with torch.no_grad():
        check = torch_hmm_ll_plain(*params, tt, tl).numpy()
    ours = np.asarray(circuits.log_likelihood(hmm, tokens, lengths))
    assert np.allclose(check, ours, rtol=1e-4, atol=1e-3), "the PyTorch HMM disagrees with ours"

    def torch_ll():
        with torch.no_grad():
            torch_hmm_ll_plain(*params, tt, tl)

    def torch_em():
        ps = [p.clone().requires_grad_(True) for p in params]
        torch_hmm_ll_plain(*ps, tt, tl).sum().backward()
        with torch.no_grad():  # M-step from the gradients (expected counts)
            for g in (ps[0].grad, ps[1].grad, ps[2].grad):
                c = g + 1e-3
                torch.log(c / c.sum(-1, keepdim=True))

    return {"ours_ll_seq_per_s": n / ours_ll, "ours_em_s": ours_em,
            "torch_ll_seq_per_s": n / median_time(torch_ll, repeats), "torch_em_s": median_time(torch_em, repeats)}


# ---- 3. guided decoding -----------------------------------------------------------------------
def bench_guided(states, n, T, repeats):
    from genppl import models
    from genppl import ppl
    from genppl.circuits.guide import sample_loop
    from genppl.tasks import sentences

    lm = models.load()
    tok = lm.tokenizer
    prompt = [tok.bos_id if tok.bos_id is not None else lm.eos_id] + tok.encode(sentences.prompt_text())
    hmm = circuits.HMM.random(jax.random.key(0), states, lm.vocab_size)
    tdfa = circuits.constraint_dfa(lm, keywords=["dog", "ball", "park"])
    t0 = time.perf_counter()
    guide = circuits.HMMGuide(hmm, tdfa, T)
    block(guide.tables)
    precompute = time.perf_counter() - t0
    out = {"hmm_states": states, "dfa_states": tdfa.num_states, "particles": n, "tokens": T,
           "precompute_s_with_compile": precompute}
    runs = {}
    # the program is a traced argument: one compile per potential kind
    loop = jax.jit(sample_loop, static_argnames=("proposal", "steps"))
    proposal = ppl.proposals.locally_optimal()

    def sample(program, state, key):
        return loop(program, state, key, proposal=proposal, steps=T)[1]

    for name, pot in (("plain", None), ("dfa_mask", ppl.DFAPotential(tdfa)), ("hmm_guide", guide)):
        program = ppl.Program(lm, prompt, T, potential=pot)
        runs[name] = (program, program.init(n))
        block(sample(*runs[name], jax.random.key(0)))  # compile
    # round robin, so that load from other processes hits every method alike
    times = {name: [] for name in runs}
    for r in range(repeats):
        for name, (program, state) in runs.items():
            t0 = time.perf_counter()
            block(sample(program, state, jax.random.key(r + 1)))
            times[name].append(time.perf_counter() - t0)
    for name, ts in times.items():
        out[f"{name}_ms_per_token"] = 1e3 * statistics.median(ts) / T
    out["guided_over_plain"] = out["hmm_guide_ms_per_token"] / out["plain_ms_per_token"]
    out["guided_over_mask"] = out["hmm_guide_ms_per_token"] / out["dfa_mask_ms_per_token"]
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    args = p.parse_args(argv)
    import torch

    # XLA flushes denormals to zero on CPU; without the same, PyTorch's exp of very negative
    # log-messages crawls through denormal arithmetic and the comparison measures only that
    torch.set_flush_denormal(True)
    reps = 2 if args.quick else 5
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; timings: median of {reps} after a warm-up")
    rat = bench_rat(16, 3, 8, 4, 500 if args.quick else 2000, reps)
    print("\n## RAT-SPN-style circuit, 16 ternary variables, 8 units/region, 4 repetitions")
    print(rat)
    hmm = bench_hmm(64 if args.quick else 256, 1024, 128 if args.quick else 512, 24, reps)
    print("\n## HMM forward / EM (V=1024, T=24)")
    print(hmm)
    guided = bench_guided(256, 32, 24, 3 * reps)
    print("\n## guided decoding on the bundled model")
    print(guided)
    return {"rat": rat, "hmm": hmm, "guided": guided}


if __name__ == "__main__":
    main()
