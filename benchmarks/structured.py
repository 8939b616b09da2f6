"""Structured generation: the cost of a grammar / JSON-schema constraint per token, two engines
compared, vocabulary scaling, and genlm-control on the same checkpoint and grammar.

    python benchmarks/structured.py                               # every part, bundled model
    python benchmarks/structured.py --part overhead --n 64 --tokens 64 --repeats 5
    python benchmarks/structured.py --part vocab --vocab 32000 150000
    python benchmarks/structured.py --part genlm --n 8 --tokens 24

Engines (both are token-level potentials inside the same SMC sweep, locally optimal proposal):

* ``dfa`` (ours, ``ppl.JSONSchema`` / ``ppl.Grammar``): the language lowered to a byte DFA on
  the host once, lifted to token tables [S, V]; per step one gather ``allowed[state]`` and one
  ``table[state, token]`` on the device, no host round trip;
* ``llguidance`` (``llguidance`` 1.9, Rust, the engine behind guidance): per step a
  ``jax.pure_callback`` hands every particle's token prefix to the host, which keeps one
  ``LLMatcher`` per distinct prefix (a dict keyed by the token tuple, so the parser state
  follows resampling for free: a resampled particle's prefix is already there), advances the
  parent's matcher by the new token (``deep_copy`` + ``consume_token``), and fills a packed
  bitmask [n, V/32] for all particles at once (``fill_next_token_bitmask_par``, its thread
  pool); the device unpacks it into the -inf / 0 row.

Parts:

* ``overhead``: seconds per step of N particles, locally optimal proposal, no resampling
  (``ess_threshold=0``: constrained decoding, the per-token cost of the constraint itself):
  no constraint (EOS forbidden before ``--tokens``, so every step is a full step), a JSON
  schema with each engine and a grammar with ours; and the schema under SMC proper
  (resampling at ESS < N/2, which adds the gathers of the LM cache). Ratio = constrained /
  unconstrained per step. Bundled model.
* ``vocab``: the same on random-initialised Qwen2-style models (hidden 64, 2 layers: the LM
  is cheap, so the constraint's own cost shows) with a synthetic byte-level vocabulary of V
  tokens (256 single bytes plus random strings of letters, digits, spaces and JSON
  punctuation), for each V of ``--vocab``; also the one-off compile cost of our token tables.
* ``genlm``: genlm-control 0.4.1 (``BoolCFG.from_lark`` and ``JsonSchema`` on a
  ``PromptedLLM`` of the same checkpoint, ``AWRS`` sampler, its ``smc``) against our SMC on the
  same grammar / schema, prompt and N; tokens/s = tokens generated / wall time.

Medians of ``--repeats`` calls after one warm-up call (which compiles); the rows of one part
run interleaved (repeat r runs every row once) so that load from other processes spreads
over all rows. Everything runs in one process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from genppl import models, ppl
from genppl.inference import smc

sys.path.insert(0, str(Path(__file__).resolve().parent))
import testbed  # noqa: E402

SCHEMA = {"type": "object", "properties": {
    "steps": {"type": "array", "items": {"type": "string"}},
    "answer": {"type": "integer"}}, "required": ["steps", "answer"], "additionalProperties": False}
GRAMMAR = r"""
start: (" " equation)+ " The answer is " NUMBER "."
equation: sum " = " NUMBER "."
?sum: product | sum " + " product | sum " - " product
?product: atom | product " * " atom
?atom: NUMBER | "(" sum ")"
NUMBER: /[0-9]+/
"""


# ---- the llguidance engine: host masks through a callback -------------------------------------
class _Gtok:
    """What llguidance's TokenizerWrapper reads: token bytes, EOS/BOS, specials, an encoder."""

    def __init__(self, token_bytes, eos_id):
        self.tokens = [b if b else b"<|special%d|>" % i for i, b in enumerate(token_bytes)]
        self.eos_token_id, self.bos_token_id = int(eos_id), None
        self.special_token_ids = [i for i, b in enumerate(token_bytes) if not b]

        self.ids = {b: i for i, b in enumerate(token_bytes) if b}
        self.longest = max(len(b) for b in token_bytes)

    def __call__(self, data):
        """Greedy longest-match tokenization (llguidance tokenizes forced bytes with it)."""
        data = data.encode() if isinstance(data, str) else bytes(data)
        out, k = [], 0
        while k < len(data):
            for size in range(min(self.longest, len(data) - k), 0, -1):
                t = self.ids.get(data[k:k + size])
                if t is not None:
                    out.append(t)
                    k += size
                    break
            else:
                raise ValueError(f"byte {data[k]} has no token")
        return out


class LLGuidanceEngine:
    """Host state of the llguidance potential: one matcher per distinct token prefix."""

    def __init__(self, grammar: str, token_bytes, eos_id: int):
        import llguidance
        import llguidance.numpy as lnp

        self.lnp = lnp
        self.tokenizer = llguidance.LLTokenizer(llguidance.TokenizerWrapper(_Gtok(token_bytes, eos_id)),
                                                n_vocab=len(token_bytes))
        self.grammar, self.vocab = grammar, len(token_bytes)
        self.executor = llguidance.LLExecutor()
        self.words = (self.vocab + 31) // 32
        self.root = llguidance.LLMatcher(self.tokenizer, grammar, log_level=0)
        assert not self.root.is_error(), self.root.get_error()
        self.reset()

    def reset(self):
        self.matchers = {(): self.root.deep_copy()}

    def masks(self, tokens, start, length):
        """Packed bitmasks [n, words] int32 of the next allowed tokens of every particle."""
        n = tokens.shape[0]
        out = np.zeros((n, self.words), np.int32)
        rows: dict = {}  # distinct prefix -> particles (a matcher is computed once per prefix)
        for i in range(n):
            rows.setdefault(tuple(int(t) for t in tokens[i, start[i]:length[i]]), []).append(i)
        jobs, owners = [], []
        for prefix, who in rows.items():
            m = self.matchers.get(prefix)
            if m is None:
                parent = self.matchers.get(prefix[:-1])
                if parent is None:  # a finished particle's tail: never used
                    continue
                m = parent.deep_copy()
                m.consume_token(prefix[-1])
                self.matchers[prefix] = m
            if not (m.is_error() or m.is_stopped()):
                jobs.append((m, len(owners)))
                owners.append(who)
        if jobs:
            distinct = np.zeros((len(owners), self.words), np.int32)
            self.lnp.fill_next_token_bitmask_par(self.executor, jobs, distinct)
            for k, who in enumerate(owners):
                out[who] = distinct[k]
        return out

    def __hash__(self):
        return id(self)

    def __eq__(self, other):
        return self is other


class LLGuidancePotential(ppl.Potential):
    """A token-level potential whose mask comes from llguidance on the host (see the module
    docstring). ``engine`` is static (compared by identity)."""

    token_level = True
    on_host = True

    def __init__(self, engine: LLGuidanceEngine):
        self.engine = engine

    def logw_next(self, pstate, lm_state):
        n, vocab = lm_state.logits.shape
        shape = jax.ShapeDtypeStruct((n, self.engine.words), jnp.int32)
        packed = jax.pure_callback(self.engine.masks, shape, lm_state.tokens, lm_state.prompt_length,
                                   lm_state.length)
        ids = jnp.arange(vocab)
        bits = (packed[:, ids // 32] >> (ids % 32)) & 1
        return jnp.where(bits > 0, 0.0, -jnp.inf).astype(jnp.float32)


def llguidance_json_grammar(schema):
    import llguidance

    return llguidance.LLMatcher.grammar_from_json_schema(
        schema, defaults={"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"})


# ---- timing -------------------------------------------------------------------------------------


def smc_row(lm, prompt, n, tokens, constraint, engine=None, ess_threshold=0.0):
    # unconstrained: EOS forbidden before the cap, so every step is a full step; constrained:
    # the constraint alone (it ends when every particle has finished or died)
    potential = ppl.MinLength(tokens, lm.eos_id) if constraint is None else constraint
    program = ppl.Program(lm, prompt, tokens, potential=potential)
    info = {}

    def run(seed):
        if engine is not None:
            engine.reset()
        result = smc.run(program, n, jax.random.key(seed), ess_threshold=ess_threshold)
        info["steps"] = len(result.ess)
        info["resamplings"] = int(result.num_resampling)
        info["alive"] = int(np.sum(result.weights > 0))
        info["text"] = result.texts[int(np.argmax(result.weights))] if info["alive"] else result.texts[0]

    return run, info


def overhead_rows(lm, prompt, n, tokens, with_llguidance=True):
    rows, infos = {}, {}
    rows["none"], infos["none"] = smc_row(lm, prompt, n, tokens, None)
    start = time.perf_counter()
    schema = ppl.JSONSchema(SCHEMA, lm)
    build = {"json, dfa": time.perf_counter() - start}
    rows["json, dfa"], infos["json, dfa"] = smc_row(lm, prompt, n, tokens, schema)
    rows["json, dfa, SMC"], infos["json, dfa, SMC"] = smc_row(lm, prompt, n, tokens, schema, ess_threshold=0.5)
    start = time.perf_counter()
    grammar = ppl.Grammar(GRAMMAR, lm, max_depth=4)
    build["grammar, dfa"] = time.perf_counter() - start
    rows["grammar, dfa"], infos["grammar, dfa"] = smc_row(lm, prompt, n, tokens, grammar)
    sizes = {"json, dfa": schema.table.shape, "grammar, dfa": grammar.table.shape}
    if with_llguidance:
        try:
            start = time.perf_counter()
            engine = LLGuidanceEngine(llguidance_json_grammar(SCHEMA), lm.tokenizer.token_bytes, lm.eos_id)
            build["json, llguidance"] = time.perf_counter() - start
            rows["json, llguidance"], infos["json, llguidance"] = smc_row(
                lm, prompt, n, tokens, LLGuidancePotential(engine), engine)
        except ImportError as err:
            print(f"llguidance not importable ({err}): its rows are skipped")
    return rows, infos, build, sizes


def report(title, seconds, infos, build, sizes, tokens):
    print(f"\n{title}")
    print("| constraint, engine | s per step | ratio to none | steps | resamplings | live particles | table [S, V] "
          "| build s |")
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    base = seconds["none"] / infos["none"]["steps"]
    for name, s in seconds.items():
        per = s / infos[name]["steps"]
        shape = "x".join(map(str, sizes[name])) if name in sizes else "-"
        b = f"{build[name]:.2f}" if name in build else "-"
        print(f"| {name} | {per * 1e3:.2f} ms | {per / base:.2f}x | {infos[name]['steps']} "
              f"| {infos[name]['resamplings']} | {infos[name]['alive']} "
              f"| {shape} | {b} |")
    for name, info in infos.items():
        print(f"  {name}: {info['text'][:100]!r}")


# ---- synthetic byte-level vocabularies --------------------------------------------------------
class SyntheticTokenizer:
    """V tokens: EOS (id 0, no bytes), the 256 single bytes, then distinct random strings."""

    def __init__(self, vocab: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        alphabet = list(b"abcdefghijklmnopqrstuvwxyz0123456789 .,:;{}[]\"-+*=")
        seen = {bytes([b]) for b in range(256)}
        pieces = [b""] + [bytes([b]) for b in range(256)]
        while len(pieces) < vocab:
            k = int(rng.integers(2, 9))
            piece = bytes(rng.choice(alphabet, k).astype(np.uint8).tolist())
            if piece not in seen:
                seen.add(piece)
                pieces.append(piece)
        self.token_bytes, self.eos_id, self.bos_id, self.vocab_size = pieces, 0, None, vocab
        self.special_ids = frozenset({0})

    def decode(self, ids, skip_special_tokens=True):
        return b"".join(self.token_bytes[int(i)] for i in ids).decode(errors="replace")

    def decode_bytes(self, ids):
        return b"".join(self.token_bytes[int(i)] for i in ids)


def synthetic_lm(vocab: int):
    from flax import nnx
    from transformers import Qwen2Config

    from genppl.models.architectures import ArchConfig
    from genppl.models.architectures.decoder import build_decoder
    from genppl.models.transformer import TransformerLM

    hf = Qwen2Config(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                     tie_word_embeddings=True, eos_token_id=0)
    config = ArchConfig.from_hf(hf)
    return TransformerLM.from_module(build_decoder(config, rngs=nnx.Rngs(0)), config, SyntheticTokenizer(vocab))


# ---- genlm-control ------------------------------------------------------------------------------
def genlm_rows(path, lm, prompt_text, n, tokens, repeats):
    """(tokens/s of genlm-control, tokens/s of ours) for the grammar and the schema."""
    try:
        from genlm.control import AWRS, BoolCFG, JsonSchema, PromptedLLM
    except ImportError as err:
        print(f"genlm-control not importable ({err}): part skipped")
        return
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    ours_prompt = [lm.eos_id] + lm.tokenizer.encode(prompt_text)
    llm = PromptedLLM.from_name(str(path), backend="hf", prompt_ids=ours_prompt)
    out = {}
    for name, make, ours in (
            ("grammar", lambda: BoolCFG.from_lark(GRAMMAR), ppl.Grammar(GRAMMAR, lm, max_depth=4)),
            ("json", lambda: JsonSchema(SCHEMA), ppl.JSONSchema(SCHEMA, lm))):
        potential = make()
        sampler = AWRS(llm, potential.coerce(llm, f=b"".join))
        counts = {}

        def run_genlm(seed, sampler=sampler, counts=counts):
            np.random.seed(seed)
            torch.manual_seed(seed)
            seqs = asyncio.run(sampler.smc(n_particles=n, ess_threshold=0.5, max_tokens=tokens))
            counts["tokens"] = sum(len(c) for c in seqs.contexts)  # generated tokens, EOS included
            counts["sample"] = str(max(zip(seqs.log_weights, map(str, seqs.contexts)))[1])

        program = ppl.Program(lm, ours_prompt, tokens, potential=ours)

        def run_ours(seed, program=program, counts=counts):
            result = smc.run(program, n, jax.random.key(seed))
            counts["ours_tokens"] = sum(len(ids) for ids in result.token_ids)
            counts["ours_text"] = result.texts[int(np.argmax(result.weights))]

        seconds = testbed.medians(testbed.interleaved({"genlm": run_genlm, "ours": run_ours}, repeats))
        out[name] = (counts["tokens"] / seconds["genlm"], counts["ours_tokens"] / seconds["ours"], counts)
    print(f"\ngenlm-control 0.4.1 against ours, N={n}, at most {tokens} tokens, same checkpoint ({path})")
    print("| constraint | genlm-control tokens/s | ours tokens/s | ours / genlm |")
    print("|---|---:|---:|---:|")
    for name, (g, o, _) in out.items():
        print(f"| {name} | {g:,.1f} | {o:,.1f} | {o / g:.1f}x |")
    for name, (_, _, c) in out.items():
        print(f"  {name}: ours {c['ours_text'][:80]!r}; genlm {c['sample'][:160]!r}")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", nargs="+", default=["overhead", "vocab", "genlm"], choices=["overhead", "vocab", "genlm"])
    p.add_argument("--model", default=None, help="checkpoint directory (default: bundled)")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--vocab", type=int, nargs="+", default=[32000, 150000])
    p.add_argument("--genlm-n", type=int, default=16)
    p.add_argument("--genlm-tokens", type=int, default=32)
    args = p.parse_args(argv)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs")

    if "overhead" in args.part:
        lm = models.load(args.model)
        prompt = [lm.eos_id] + lm.tokenizer.encode("Q: What is 2 + 3?\nA:")
        rows, infos, build, sizes = overhead_rows(lm, prompt, args.n, args.tokens)
        seconds = testbed.medians(testbed.interleaved(rows, args.repeats))
        report(f"overhead: {lm!r}, N={args.n}, {args.tokens} steps", seconds, infos, build, sizes, args.tokens)
    if "vocab" in args.part:
        for vocab in args.vocab:
            lm = synthetic_lm(vocab)
            prompt = [int(t) for t in np.random.default_rng(0).integers(1, vocab, 8)]
            rows, infos, build, sizes = overhead_rows(lm, prompt, args.n, args.tokens)
            seconds = testbed.medians(testbed.interleaved(rows, args.repeats))
            report(f"vocabulary {vocab:,} (synthetic byte-level, random-init 2-layer model), N={args.n}, "
                   f"{args.tokens} steps", seconds, infos, build, sizes, args.tokens)
    if "genlm" in args.part:
        path = args.model or models.bundled_path()
        lm = models.load(path)
        genlm_rows(path, lm, "Q: What is 2 + 3?\nA:", args.genlm_n, args.genlm_tokens, args.repeats)


if __name__ == "__main__":
    main()
