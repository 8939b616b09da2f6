"""SMC with its particles spread over several devices, exactly the one-device run.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python examples/sharded_smc.py   # 8 CPU "devices"
    python examples/sharded_smc.py                     # whatever devices this process sees (1 on a laptop)
    python examples/sharded_smc.py --model DIR --n 16 --max-new-tokens 12

Target: p(x | "S:") * 1[no "e" in x], as in ``avoid_letter.py``. The same call runs three
times: on one device; on a mesh of every visible device with global resampling (every
ancestor drawn from all n weights: the same tokens and the same log Z as on one device, up to
float32 rounding, while particles whose ancestor lives on another device are copied across); and with
island resampling (each device's n / D particles an independent SMC; log Z is the
log-mean-exp of the islands' estimates, unbiased too, and no particle crosses a device).
Each result's ``layout`` says where it lived: the mesh, the bytes of state per device, and
the bytes resampling moved.
"""

from __future__ import annotations

import argparse

import jax

from genppl import distributed, models, ppl
from genppl.inference import smc


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint directory (default: bundled)")
    p.add_argument("--prompt", default="S:")
    p.add_argument("--n", type=int, default=32, help="particles (a multiple of the number of devices)")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--devices", type=int, default=None, help="devices of the mesh (default: all)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    lm = models.load(args.model)
    prompt = [lm.eos_id] + lm.tokenizer.encode(args.prompt)
    program = ppl.Program(lm, prompt, args.max_new_tokens, potential=ppl.BannedStrings(["e", "E"], lm))
    mesh = distributed.make_mesh(args.devices)  # a (data, model) mesh; model axis 1 here
    print(f"devices: {len(jax.devices())} x {jax.devices()[0].platform}; mesh {dict(mesh.shape)}")

    one = smc.run(program, args.n, args.seed)
    spread = smc.run(program, args.n, args.seed, mesh=mesh)                        # global resampling
    islands = smc.run(program, args.n, args.seed, mesh=mesh, resampling="island")
    for name, result in (("one device", one), ("mesh, global", spread), ("mesh, island", islands)):
        print(f"{name:13s} log Z = {result.log_z:9.4f}  resampled {result.num_resampling} times  "
              f"best: {result.best()!r}")
        if result.layout is not None:
            print(f"{'':13s} {result.layout}")

    # the same tokens; log Z the same up to float32 rounding (XLA may choose another kernel for a
    # matrix product over n / D rows than over n rows: see genppl.distributed.placement)
    same = spread.token_ids == one.token_ids and abs(spread.log_z - one.log_z) <= 1e-5 * max(1.0, abs(one.log_z))
    print(f"check (the mesh with global resampling gives the one-device tokens and log Z): {'ok' if same else 'FAILED'}")
    return {"check": same, "one": one, "global": spread, "island": islands, "devices": len(jax.devices())}


if __name__ == "__main__":
    main()
