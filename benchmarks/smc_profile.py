"""Where constrained SMC spends its time beyond plain decoding (issue 12: SMC <= 1.1x decoding).

    python benchmarks/smc_profile.py                 # bundled model, N=64, 64 tokens, 7 repeats
    python benchmarks/smc_profile.py --n 64 256 --repeats 5

Task: ``<BOS>S:`` continued by exactly ``--tokens`` tokens (``benchmarks/smc.py``'s task).
Six compiled programs, each timed from a fresh state to ``block_until_ready``, interleaved in
rotating order after one warm-up call each:

* decode: ``models.sampling.generate`` (plain sampling, EOS forbidden until the end);
* SMC, no constraint: the jitted sweep (``smc.run``'s, locally optimal proposal, systematic
  resampling at ESS < N/2) of ``MinLength(T)``;
* SMC, no "e": the same with ``* BannedStrings(["e", "E"])``;
* the two SMC programs with ``ess_threshold=0`` (never resample): every other part of the
  step (the constraint's masks, the proposal, the weights) without the resampling;
* SMC, no "e", with the whole-buffer gather (``LanguageModel.gather``: every slot of the
  generated cache moved at each resampling, the engine before issue 12's gather), the same
  draws: its time against "SMC, no e" is what gathering only the filled slots saves.

Reported per variant: CPU time per call (this process, every thread: less disturbed than
wall time on a shared machine) and the median over rounds of its ratio to decode in the same
round, and the resampling count (first seed). Then the resampling itself: the bytes each
resampling of the "no e" sweep moved (first seed; ``TransformerLM.gather`` copies the generated
keys in blocks up to the longest filled row, ``gathered_slots`` per row, plus every other
per-particle leaf; the shared prompt cache stays), their mean against the whole per-particle
state (``particle_bytes``, what a gather of the whole buffer moves), and the CPU milliseconds of
one gather at a few filled lengths, from a compiled loop of 20 gathers with sorted random
ancestors, against the whole-buffer gather (interleaved rounds).
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from genppl import models, ppl
from genppl.inference import smc
from genppl.models import sampling
from genppl.models.interface import map_particles, particle_bytes
from genppl.models.interface import LanguageModel
from genppl.models.transformer import TransformerLM, gathered_slots

run_lib = importlib.import_module("genppl.inference.smc.run")  # the module (smc.run is the function)


def gather_ms(gathers: dict, particles, n: int, repeats: int, reps: int = 20) -> dict:
    """CPU ms of one ``gather(particles, ancestors)`` for each of ``gathers`` (name -> function):
    the median over ``repeats`` interleaved rounds of a compiled loop of ``reps`` gathers."""
    def loop(gather):
        def body(p, key):
            ancestors = jnp.sort(jax.random.randint(key, (n,), 0, n)).astype(jnp.int32)
            return gather(p, ancestors), None
        return jax.jit(lambda p, key: jax.lax.scan(body, p, jax.random.split(key, reps))[0])

    loops = {name: loop(g) for name, g in gathers.items()}
    for f in loops.values():
        jax.block_until_ready(f(particles, jax.random.key(0)))
    times = {name: [] for name in loops}
    for r in range(repeats):
        for name, f in loops.items():
            c0 = time.process_time()
            jax.block_until_ready(f(particles, jax.random.key(r + 1)))
            times[name].append(time.process_time() - c0)
    return {name: 1e3 * statistics.median(t) / reps for name, t in times.items()}


@jax.tree_util.register_pytree_node_class
class _WholeGatherLM(TransformerLM):
    """The same model, resampled by moving every slot of the cache (``LanguageModel.gather``)."""

    gather = staticmethod(LanguageModel.gather)


def _whole_gather(lm):
    children, aux = lm.tree_flatten()
    return _WholeGatherLM.tree_unflatten(aux, children)


def moved_bytes(particles, filled: int) -> int:
    """Bytes one ``TransformerLM.gather`` moves when the longest row holds ``filled`` generated
    tokens: every per-particle leaf but the generated keys/values, and of those the slots
    ``gathered_slots`` says (``filled`` rounded up to the gather's blocks)."""
    cache = particles.lm.cache
    own = particle_bytes((cache["k"], cache["v"]))
    slots = cache["k"][0].shape[1]
    return particle_bytes(particles) - own + own * gathered_slots(slots, filled) // slots


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None)
    p.add_argument("--n", type=int, nargs="+", default=[64])
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    lm = models.load(args.model)
    prompt = [lm.eos_id] + lm.tokenizer.encode("S:")
    T = args.tokens
    rows = {}
    for n in args.n:
        length = ppl.MinLength(T, lm.eos_id)
        plain = ppl.Program(lm, prompt, T, potential=length)
        no_e = ppl.Program(lm, prompt, T, potential=length * ppl.BannedStrings(["e", "E"], lm))

        def decode(seed):
            return sampling.generate(lm, lm.prefill(prompt, n, T), jax.random.key(seed), T, models.Processing(), T)

        def sweep(program, kernel):
            return lambda seed: run_lib.sweep_jit(kernel, program, smc.init(program, n), jax.random.key(seed))

        always, never = smc.build_kernel(), smc.build_kernel(ess_threshold=0.0)
        no_e_whole = ppl.Program(_whole_gather(lm), prompt, T, potential=length * ppl.BannedStrings(["e", "E"], lm))
        variants = {"decode": decode, "SMC, no constraint": sweep(plain, always), "SMC, no e": sweep(no_e, always),
                    "SMC, no constraint, never resample": sweep(plain, never),
                    "SMC, no e, never resample": sweep(no_e, never),
                    "SMC, no e, whole-buffer gather": sweep(no_e_whole, always)}
        resamplings = {}
        for name, f in variants.items():  # warm-up: compile each
            out = jax.block_until_ready(f(0))
            if name != "decode":
                resamplings[name] = int(np.asarray(out[1].resampled).sum())
            if name == "SMC, no e":
                resampled_at = np.asarray(out[1].resampled)
        cpu = {name: [] for name in variants}
        names = list(variants)
        for r in range(args.repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order
                c0 = time.process_time()
                jax.block_until_ready(variants[name](r + 1))
                cpu[name].append(time.process_time() - c0)
        print(f"N={n}, {T} tokens, {args.repeats} interleaved rounds (CPU seconds per call)")
        print("| variant | CPU s (median) | ratio to decode (median over rounds) | resamplings |")
        print("|---|---:|---:|---:|")
        for name in names:
            ratio = statistics.median(c / d for c, d in zip(cpu[name], cpu["decode"]))
            rows[(n, name)] = {"cpu": statistics.median(cpu[name]), "ratio": ratio}
            print(f"| {name} | {statistics.median(cpu[name]):.3f} | {ratio:.3f}x | {resamplings.get(name, '-')} |")
        particles = smc.init(plain, n).particles
        whole = particle_bytes(particles)
        steps = np.flatnonzero(np.asarray(resampled_at))  # step t resamples particles of t tokens
        per = [moved_bytes(particles, int(t)) for t in steps]
        mean = float(np.mean(per)) if per else 0.0
        rows[(n, "bytes")] = {"whole": whole, "mean": mean, "per": per}
        print(f"bytes moved per resampling ('no e', {len(per)} resamplings at steps {steps.tolist()}): "
              f"mean {mean / 1e6:.2f} MB against {whole / 1e6:.2f} MB for the whole per-particle state "
              f"({mean / whole:.2f}x)")
        print("| generated tokens | bytes moved | CPU ms per gather | whole-buffer gather: bytes | CPU ms |")
        print("|---:|---:|---:|---:|---:|")
        for filled in (16, 32, T):
            at = particles.replace(lm=particles.lm.replace(length=particles.lm.prompt_length + filled))
            ms = gather_ms({"ours": plain.gather, "whole": lambda p, a: map_particles(lambda x: x[a], p)},
                           at, n, args.repeats)
            ours, full = ms["ours"], ms["whole"]
            rows[(n, "gather", filled)] = {"bytes": moved_bytes(at, filled), "ms": ours, "whole_ms": full}
            print(f"| {filled} | {moved_bytes(at, filled):,} | {ours:.2f} | {whole:,} | {full:.2f} |", flush=True)
        print()
    return rows


if __name__ == "__main__":
    main()
