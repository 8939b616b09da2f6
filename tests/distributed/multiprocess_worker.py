"""One process of the multi-process tests (tests/distributed/test_launch.py): joins a run with
``distributed.launch.initialize``, runs SMC on a tiny checkpoint over a mesh of every process's
devices, and (process 0 only) writes the tokens and log Z as JSON.

    python -m tests.distributed.multiprocess_worker COORDINATOR NUM_PROCESSES PROCESS_ID CHECKPOINT OUT
        [--model-parallel M] [--die PROCESS_ID]
"""

import argparse
import json
import os
import sys


def program(lm):
    from genppl import ppl

    prompt = [lm.eos_id] + lm.tokenizer.encode("the cat")
    return ppl.Program(lm, prompt, max_new_tokens=8, potential=ppl.BannedTokens([5, 7, 11]))


N, KEY = 8, 3


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("coordinator")
    p.add_argument("num_processes", type=int)
    p.add_argument("process_id", type=int)
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.add_argument("--model-parallel", type=int, default=1)
    p.add_argument("--die", type=int, default=None, help="this process exits abruptly after the first run; "
                   "the others keep running SMC with it")
    args = p.parse_args(argv)

    from genppl import distributed

    distributed.launch.initialize(args.coordinator, args.num_processes, args.process_id, heartbeat_timeout_s=10)
    import jax

    from genppl import models
    from genppl.inference import smc

    lm = models.load(args.checkpoint)
    mesh = distributed.make_mesh(model_parallel=args.model_parallel)
    print(f"process {jax.process_index()}: {len(jax.local_devices())} of {len(jax.devices())} devices, "
          f"mesh {dict(mesh.shape)}", file=sys.stderr, flush=True)
    result = smc.run(program(lm), N, key=KEY, mesh=mesh)
    if distributed.launch.is_main():
        with open(args.out, "w") as f:
            json.dump({"token_ids": [list(map(int, t)) for t in result.token_ids], "log_z": float(result.log_z),
                       "log_weights": [float(w) for w in result.log_weights]}, f)
    print(f"process {jax.process_index()}: done", file=sys.stderr, flush=True)
    if args.die is not None and jax.process_index() == args.die:
        os._exit(3)  # dies without a goodbye: the other processes must notice
    while args.die is not None:  # the survivors keep working with their (dead) peer
        smc.run(program(lm), N, key=KEY + 1, mesh=mesh)


if __name__ == "__main__":
    main()
