"""Decoding a ~0.5B Qwen2-shaped model: achieved memory bandwidth as a fraction of the device's
peak, and tokens/s against transformers on the same device. One prepared command for a GPU:

    python benchmarks/bandwidth.py                 # Qwen2-0.5B shape, bfloat16, N in 1 64 256
    python benchmarks/bandwidth.py --quick         # a 2-layer cut of it: checks the script on a CPU

The model is random-initialised (nothing is downloaded): our decoder with ``nnx.Rngs(0)``, and
for the comparison a ``transformers`` ``Qwen2ForCausalLM`` of the same config and dtype on the
same device (its own random weights: throughput does not depend on the values), run only when
torch is importable and sees that device (a CUDA device for a GPU run; the CPU with
``--quick``), else its column says why it is missing. Both sides decode exactly ``--tokens``
new tokens (EOS suppressed) after a ``--prompt``-token prompt; one warm-up call each, then the
median of ``--repeats`` interleaved timed calls.

Bandwidth: a decode step must read every weight once plus the keys and values of the filled
part of the cache (our attention reads only that: the prompt's cache once, shared by the N
rows, and each row's generated keys), so ``bytes per step = weights + KV(prompt) + N *
KV(mean generated length)``; the achieved bandwidth is that over the measured step time, and
the fraction is against the device's peak (``--peak-gbs``, else a table of known parts).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from genppl import models
from genppl.models.architectures import ArchConfig, build_decoder
from genppl.models.transformer import TransformerLM

#: bytes/s of known parts (HBM, SXM variants)
PEAK_BANDWIDTH = {"H200": 4.8e12, "H100": 3.35e12, "A100": 2.0e12, "L40S": 0.864e12, "A10G": 0.6e12}


def torch_runner(hf_config, dtype_name, prompt, n, tokens, device):
    import torch
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(0)
    dtype = torch.bfloat16 if dtype_name == "bfloat16" else torch.float32
    model = Qwen2ForCausalLM(hf_config).to(device=device, dtype=dtype).eval()
    ids = torch.tensor([prompt] * n, device=device)
    kwargs = dict(do_sample=True, max_new_tokens=tokens, min_new_tokens=tokens, top_k=0, top_p=1.0,
                  temperature=1.0, pad_token_id=0, attention_mask=torch.ones_like(ids))

    def run(seed):
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = model.generate(ids, **kwargs)
        if device != "cpu":
            torch.cuda.synchronize()
        assert out.shape == (n, len(prompt) + tokens)
    return run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=24)
    p.add_argument("--hidden", type=int, default=896)
    p.add_argument("--intermediate", type=int, default=4864)
    p.add_argument("--heads", type=int, default=14)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--vocab", type=int, default=151936)
    p.add_argument("--n", type=int, nargs="+", default=[1, 64, 256])
    p.add_argument("--prompt", type=int, default=32)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--peak-gbs", type=float, default=None, help="peak memory bandwidth in GB/s")
    p.add_argument("--quick", action="store_true", help="2 layers, vocab 4096, N 1 8, 16 tokens: a CPU check")
    p.add_argument("--skip-torch", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.layers, args.vocab, args.n, args.tokens, args.prompt, args.repeats = 2, 4096, [1, 8], 16, 16, 2

    from transformers import Qwen2Config

    hf = Qwen2Config(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                     num_hidden_layers=args.layers, num_attention_heads=args.heads,
                     num_key_value_heads=args.kv_heads, max_position_embeddings=4096,
                     tie_word_embeddings=True, eos_token_id=0)
    config = ArchConfig.from_hf(hf)
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    lm = TransformerLM.from_module(build_decoder(config, rngs=nnx.Rngs(0), dtype=dtype), config, None, dtype)
    param_bytes = lm.weight_bytes()

    device = jax.devices()[0]
    kind = getattr(device, "device_kind", str(device))
    peak = args.peak_gbs * 1e9 if args.peak_gbs else next(
        (bw for name, bw in PEAK_BANDWIDTH.items() if name in kind), None)
    torch_device, why = None, "--skip-torch"
    if not args.skip_torch:
        try:
            import torch

            if jax.default_backend() == "gpu" and torch.cuda.is_available():
                torch_device = "cuda"
            elif jax.default_backend() == "cpu" and args.quick:
                torch_device = "cpu"
            else:
                why = f"torch {torch.__version__} sees no CUDA device here"
        except ImportError:
            why = "torch is not installed here"

    print(f"device: {kind} ({jax.default_backend()}), jax {jax.__version__}; params {param_bytes / 1e9:.3f} GB "
          f"{args.dtype}; {args.tokens} tokens after a {args.prompt}-token prompt; median of {args.repeats}")
    print(f"peak bandwidth: {'unknown (pass --peak-gbs)' if peak is None else f'{peak / 1e9:,.0f} GB/s'}; "
          f"transformers: {'on ' + torch_device if torch_device else 'not run (' + why + ')'}\n")
    print("| N | ms / step | tokens/s | GB read / step | achieved GB/s | fraction of peak | transformers tokens/s | ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    itemsize = jnp.dtype(dtype).itemsize
    kv_per_position = 2 * args.layers * args.kv_heads * config.head_dim * itemsize
    prompt = [int(t) for t in np.random.default_rng(0).integers(1, args.vocab, args.prompt)]
    for n in args.n:
        def ours(seed, n=n):
            out = models.sample(lm, prompt, n, args.tokens, jax.random.key(seed), min_new_tokens=args.tokens, progress=False)
            assert int(out.num_tokens.sum()) == n * args.tokens
        runners = {"ours": ours}
        if torch_device:
            runners["torch"] = torch_runner(hf, args.dtype, prompt, n, args.tokens, torch_device)
        for run in runners.values():
            run(0)
        times = {k: [] for k in runners}
        for r in range(args.repeats):
            for k, run in runners.items():
                start = time.perf_counter()
                run(r + 1)
                times[k].append(time.perf_counter() - start)
        med = {k: statistics.median(v) for k, v in times.items()}
        step = med["ours"] / args.tokens
        read = param_bytes + kv_per_position * (args.prompt + n * args.tokens / 2)
        frac = "-" if peak is None else f"{read / step / peak:.1%}"
        theirs = "-" if "torch" not in med else f"{n * args.tokens / med['torch']:,.0f}"
        ratio = "-" if "torch" not in med else f"{med['torch'] / med['ours']:.2f}x"
        print(f"| {n} | {step * 1e3:.2f} | {n * args.tokens / med['ours']:,.0f} | {read / 1e9:.3f} | "
              f"{read / step / 1e9:,.1f} | {frac} | {theirs} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
