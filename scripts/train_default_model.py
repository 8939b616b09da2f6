#!/usr/bin/env python
"""Train the bundled default model: corpus, tokenizer, a small Llama-style decoder, evaluation.

    python scripts/train_default_model.py                       # the committed checkpoint
    python scripts/train_default_model.py --steps 200 --out /tmp/m --eval-n 50   # a quick run
    python scripts/train_default_model.py --eval-only --out models/bundled      # re-measure
    python scripts/train_default_model.py --reasoner     # the second model, models/bundled-reasoner

Steps:

1. build the corpus (:func:`tasks.corpus.build_corpus`): arithmetic word problems with worked
   answers and simple sentences, shuffled;
2. train a byte-level BPE tokenizer on it (``tokenizers``): digits split one per token, one
   special token ``<|endoftext|>`` (id 0) that serves as BOS, EOS and padding;
3. write each document as ``<|endoftext|> document`` and pack whole documents into rows of
   ``--seq-len + 1`` tokens, each row starting with ``<|endoftext|>`` and every document
   closed by one (padding after the last document is masked out of the loss);
4. train the project's Flax NNX Llama decoder (``models.architectures``) with AdamW, linear
   warm-up and cosine decay, next-token loss on every real token;
5. save a Hugging Face checkpoint (``config.json``, ``model.safetensors`` in float32,
   tokenizer files, ``generation_config.json``) that ``transformers`` loads as well;
6. reload it with ``models.load`` and measure plain-sampling accuracy on the held-out
   arithmetic problems and the well-formedness of sampled sentences.

Everything is seeded by ``--seed``; on the same machine the run is deterministic.
Scratch files (the tokenized corpus, metrics) go to ``scripts/_work/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from genppl.tasks import arithmetic, chains, multistep, sentences  # noqa: E402
from genppl.tasks.corpus import build_corpus  # noqa: E402

#: the harder tasks (train/dev/eval splits) that --task can evaluate
HARD_TASKS = {"chains": chains, "multistep": multistep}

EOT = "<|endoftext|>"
WORK = ROOT / "scripts" / "_work"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------
# tokenizer
# ---------------------------------------------------------------------------------------
def train_tokenizer(docs: list[str], vocab_size: int, max_length: int):
    """A byte-level BPE tokenizer (``transformers.PreTrainedTokenizerFast``) trained on docs.

    Digits are pre-split one per token, so every number is spelled digit by digit; the only
    special token is ``<|endoftext|>`` (id 0), which is BOS, EOS and padding. Calling the
    Hugging Face tokenizer with its defaults prepends BOS (``add_bos_token=True``).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(docs, trainer=trainer, length=len(docs))
    assert tok.token_to_id(EOT) == 0, "the special token must have id 0"
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOT, eos_token=EOT, pad_token=EOT, unk_token=None,
        add_bos_token=True, add_eos_token=False, model_max_length=max_length,
        clean_up_tokenization_spaces=False,
    )
    return hf


def encode_docs(hf, docs: list[str]) -> list[list[int]]:
    backend = hf.backend_tokenizer
    return [e.ids for e in backend.encode_batch(docs, add_special_tokens=False)]


def question_lengths(hf, docs: list[str], doc_ids: list[list[int]]) -> list[int]:
    """Tokens of each word problem up to and including its ``"A:"`` (0 for other documents):
    the part ``--answer-loss`` leaves out of the loss."""
    heads = [d[: d.index("\nA:") + 3] if d.startswith("Q:") and "\nA:" in d else "" for d in docs]
    out = []
    for head, ids in zip(heads, encode_docs(hf, heads)):
        k = len(ids) if head else 0
        while k and ids[:k] != doc_ids[len(out)][:k]:  # a merge across the cut: keep the common part
            k -= 1
        out.append(k)
    return out


def pack(doc_ids: list[list[int]], row_len: int, eot: int, open_rows: int = 32, skip=None):
    """Pack ``[eot] + doc`` chunks into rows of ``row_len`` tokens, whole documents only.

    Each row is ``eot d1 eot d2 ... eot dk eot pad...``: it starts with ``eot`` and every
    document in it is followed by ``eot``. First fit over a window of ``open_rows`` rows.
    Returns tokens [R, row_len] int32 and a loss mask [R, row_len - 1] for the targets
    ``tokens[:, 1:]``. ``skip[d]`` (optional): how many leading tokens of document ``d`` are
    left out of the loss (its question, to train on the answers only).
    """
    rows: list[list[int]] = []
    window: list[list[int]] = []
    # the targets of each row left out of the loss, as (row, first target, end target)
    holes: list[tuple[int, int, int]] = []
    for d, ids in enumerate(doc_ids):
        chunk = list(ids) + [eot]
        if len(chunk) + 1 > row_len:
            raise ValueError(f"a document of {len(ids)} tokens does not fit a row of {row_len}")
        for row in window:
            if len(row) + len(chunk) <= row_len:
                start = len(row)
                row.extend(chunk)
                break
        else:
            if len(window) >= open_rows:
                rows.append(window.pop(0))
            window.append([eot] + chunk)
            row, start = window[-1], 1
        if skip is not None and skip[d]:
            # target t predicts token t + 1: the document's first skip[d] tokens are targets start-1..
            holes.append((id(row), start - 1, start - 1 + skip[d]))
    rows.extend(window)
    tokens = np.full((len(rows), row_len), eot, np.int32)
    mask = np.zeros((len(rows), row_len - 1), np.float32)
    index = {id(row): i for i, row in enumerate(rows)}
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = row
        mask[i, : len(row) - 1] = 1.0
    for key, lo, hi in holes:
        mask[index[key], lo:hi] = 0.0
    return tokens, mask


def answer_probe(hf, n: int, task: str = "arithmetic"):
    """Held-out problems for a teacher-forced progress check during training.

    Returns tokens [n, L] (BOS + document, padded) and a mask [n, L - 1] over the targets that
    are digits of a result (after ``"= "`` or ``"is "`` on the answer line).
    """
    import re

    if task in HARD_TASKS:  # the dev split: tuning (when to stop) never looks at eval
        docs = [HARD_TASKS[task].document(p) for p in HARD_TASKS[task].problems("dev", n)]
    else:
        docs = [arithmetic.document(p) for p in arithmetic.eval_problems(n)]
    encs = hf.backend_tokenizer.encode_batch(docs, add_special_tokens=False)
    length = max(len(e.ids) for e in encs) + 1
    tokens = np.zeros((n, length), np.int32)
    mask = np.zeros((n, length - 1), np.float32)
    for i, (doc, enc) in enumerate(zip(docs, encs)):
        tokens[i, 1: len(enc.ids) + 1] = enc.ids
        spans = [m.span(1) for m in re.finditer(r"(?:= |is )(\d+)", doc)]
        for j, (a, b) in enumerate(enc.offsets):
            if any(a >= lo and b <= hi for lo, hi in spans):
                mask[i, j] = 1.0  # target j is document token j
    return tokens, mask


# ---------------------------------------------------------------------------------------
# model and training
# ---------------------------------------------------------------------------------------
def make_config(args, vocab_size: int):
    from transformers import LlamaConfig

    from genppl.models.architectures import ArchConfig

    hf_config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=args.max_positions,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
        torch_dtype="float32",
    )
    return ArchConfig.from_hf(hf_config)


def lr_schedule(args):
    warmup = max(1, min(args.warmup, args.steps // 2))
    return optax_schedule(args.lr, warmup, args.steps, args.min_lr_ratio)


def optax_schedule(peak, warmup, total, min_ratio):
    import optax

    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak, warmup_steps=warmup,
        decay_steps=max(total, warmup + 1), end_value=peak * min_ratio,
    )


def train(args, config, tokens: np.ndarray, mask: np.ndarray, probe, save=None, init=None):
    import optax
    from flax import nnx

    from genppl.models.architectures import build_decoder

    decoder = build_decoder(config, rngs=nnx.Rngs(args.seed), dtype=jnp.float32) if init is None else init
    graphdef, params, rest = nnx.split(decoder, nnx.Param, ...)
    num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    log(f"model: {num_params:,} parameters")

    decay_mask = jax.tree.map(lambda x: x.ndim >= 2, params)
    tx = optax.chain(
        optax.clip_by_global_norm(args.clip),
        optax.adamw(lr_schedule(args), b1=0.9, b2=0.95, eps=1e-8,
                    weight_decay=args.weight_decay, mask=decay_mask),
    )
    opt_state = tx.init(params)
    seq = tokens.shape[1] - 1
    positions = jnp.broadcast_to(jnp.arange(seq, dtype=jnp.int32), (args.batch_size, seq))

    def loss_fn(params, batch, weights):
        model = nnx.merge(graphdef, params, rest)
        logits, _ = model(batch[:, :-1], positions, None)
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        nll = -jnp.take_along_axis(logp, batch[:, 1:, None], axis=-1)[..., 0]
        return jnp.sum(nll * weights) / jnp.maximum(jnp.sum(weights), 1.0)

    @jax.jit
    def step(params, opt_state, batch, weights):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch, weights)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, loss, optax.global_norm(grads)

    probe_tokens, probe_mask = jnp.asarray(probe[0]), probe[1]
    probe_positions = jnp.broadcast_to(jnp.arange(probe_tokens.shape[1] - 1, dtype=jnp.int32),
                                       (probe_tokens.shape[0], probe_tokens.shape[1] - 1))

    @jax.jit
    def probe_predictions(params):
        model = nnx.merge(graphdef, params, rest)
        logits, _ = model(probe_tokens[:, :-1], probe_positions, None)
        return jnp.argmax(logits, axis=-1)

    def run_probe(params):
        hit = np.asarray(probe_predictions(params)) == probe[0][:, 1:]
        digits = float((hit * probe_mask).sum() / probe_mask.sum())
        problems = float(np.mean(np.all(hit | (probe_mask == 0), axis=1)))
        return digits, problems

    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(tokens))
    cursor = 0
    losses = []
    t0 = time.time()
    history = []
    last = args.steps if args.stop_after is None else min(args.stop_after, args.steps)
    for it in range(1, last + 1):
        if cursor + args.batch_size > len(order):
            order, cursor = rng.permutation(len(tokens)), 0
        idx = np.sort(order[cursor: cursor + args.batch_size])
        cursor += args.batch_size
        params, opt_state, loss, gnorm = step(params, opt_state, jnp.asarray(tokens[idx]), jnp.asarray(mask[idx]))
        losses.append(loss)
        if it % args.log_every == 0 or it % args.probe_every == 0 or it == last or it == 1:
            recent = float(np.mean(jax.device_get(losses[-args.log_every:])))
            elapsed = time.time() - t0
            history.append({"step": it, "loss": recent, "time_s": round(elapsed, 1)})
            log(f"step {it}/{args.steps} loss {recent:.4f} grad-norm {float(gnorm):.3f} "
                f"lr {float(lr_schedule(args)(it)):.2e} {elapsed:.0f}s "
                f"({it * args.batch_size * seq / max(elapsed, 1e-9):.0f} tok/s)")
        if it % args.probe_every == 0 or it == last:
            digits, problems = run_probe(params)
            history[-1].update({"probe_digit_accuracy": digits, "probe_problem_accuracy": problems})
            log(f"  held-out, teacher-forced: result digits right {digits:.3f}, "
                f"all results of a problem right {problems:.3f}")
        if save is not None and args.save_every and it % args.save_every == 0 and it != last:
            save(nnx.merge(graphdef, params, rest), it)
    train_time = time.time() - t0
    final_loss = float(np.mean(jax.device_get(losses[-args.log_every:])))
    decoder = nnx.merge(graphdef, params, rest)
    return decoder, {"num_params": num_params, "train_time_s": round(train_time, 1),
                     "final_loss": final_loss, "history": history}


# ---------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("max_new_tokens", "greedy"))
def _decode(lm, state, key, temperature, max_new_tokens: int, greedy: bool):
    n = state.tokens.shape[0]
    eos = lm.eos_id

    def body(i, carry):
        state, out, done, key = carry
        key, sub = jax.random.split(key)
        logits = lm.logits(state)
        if greedy:
            tok = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        else:
            tok = jax.random.categorical(sub, logits / temperature, axis=-1).astype(jnp.int32)
        tok = jnp.where(done, eos, tok)
        out = out.at[:, i].set(jnp.where(done, -1, tok))
        state = lm.extend(state, tok, active=~done)
        return state, out, done | (tok == eos), key

    out = jnp.full((n, max_new_tokens), -1, jnp.int32)
    carry = (state, out, jnp.zeros((n,), bool), key)
    _, out, done, _ = jax.lax.fori_loop(0, max_new_tokens, body, carry)
    return out, done


def generate(lm, prompts: list[list[int]], max_new_tokens: int, key, temperature: float = 1.0,
             greedy: bool = False, chunk: int = 512):
    """Continue many prompts (each starting with BOS) in batches; returns (texts, finished)."""
    bos = prompts[0][0]
    assert all(p and p[0] == bos for p in prompts)
    longest = max(len(p) for p in prompts)
    texts, finished = [], []
    for start in range(0, len(prompts), chunk):
        part = prompts[start: start + chunk]
        n = len(part)
        state = lm.prefill([bos], n=n, max_new_tokens=longest - 1 + max_new_tokens)
        if longest > 1:
            tail = np.zeros((n, longest - 1), np.int32)
            tmask = np.zeros((n, longest - 1), bool)
            for i, p in enumerate(part):
                tail[i, : len(p) - 1] = p[1:]
                tmask[i, : len(p) - 1] = True
            state, _ = lm.advance(state, jnp.asarray(tail), jnp.asarray(tmask))
        key, sub = jax.random.split(key)
        out, done = jax.device_get(_decode(lm, state, sub, jnp.float32(temperature), max_new_tokens, greedy))
        for row, d in zip(out, done):
            ids = [int(t) for t in row if t >= 0 and t != lm.eos_id]
            texts.append(lm.tokenizer.decode(ids))
            finished.append(bool(d))
    return texts, finished


def evaluate(path, n_problems: int, samples_per_problem: int, n_sentences: int, seed: int):
    from genppl import models

    lm = models.load(path)
    tok = lm.tokenizer
    bos = tok.bos_id if tok.bos_id is not None else lm.eos_id
    key = jax.random.key(seed)
    problems = arithmetic.eval_problems(n_problems)
    prompts = [[bos] + tok.encode(arithmetic.prompt_text(p)) for p in problems]
    metrics = {"eval_problems": n_problems, "samples_per_problem": samples_per_problem}
    t0 = time.time()

    texts, finished = generate(lm, prompts, 64, key, greedy=True)
    metrics["arithmetic_greedy_accuracy"] = arithmetic.accuracy(texts, problems)
    metrics["arithmetic_greedy_steps_ok"] = float(np.mean([arithmetic.check_steps(t) for t in texts]))
    examples = [arithmetic.prompt_text(problems[i]) + texts[i] for i in range(3)]

    reps = [p for p in prompts for _ in range(samples_per_problem)]
    rep_problems = [p for p in problems for _ in range(samples_per_problem)]
    key, sub = jax.random.split(key)
    texts, finished = generate(lm, reps, 64, sub, temperature=1.0)
    correct = np.array([arithmetic.is_correct(t, p) for t, p in zip(texts, rep_problems)])
    per_problem = correct.reshape(n_problems, samples_per_problem)
    metrics["arithmetic_t1_accuracy"] = float(correct.mean())
    metrics["arithmetic_t1_any_correct"] = float(per_problem.any(1).mean())
    metrics["arithmetic_t1_steps_ok"] = float(np.mean([arithmetic.check_steps(t) for t in texts]))
    metrics["arithmetic_t1_answered"] = float(np.mean([arithmetic.extract_answer(t) is not None for t in texts]))
    metrics["arithmetic_t1_finished"] = float(np.mean(finished))
    # per step count: accuracy by number of operations
    by_ops = {}
    for p, row in zip(problems, per_problem):
        by_ops.setdefault(p.solution.count("="), []).append(row.mean())
    metrics["arithmetic_t1_accuracy_by_ops"] = {k: round(float(np.mean(v)), 3) for k, v in sorted(by_ops.items())}
    examples += [arithmetic.prompt_text(rep_problems[i]) + texts[i] for i in range(0, 4 * samples_per_problem, samples_per_problem)]

    prompt = [bos] + tok.encode(sentences.prompt_text())
    key, sub = jax.random.split(key)
    texts, finished = generate(lm, [prompt] * n_sentences, 40, sub, temperature=1.0)
    metrics["sentences_samples"] = n_sentences
    metrics["sentences_well_formed"] = float(np.mean([sentences.is_well_formed(t) for t in texts]))
    metrics["sentences_in_vocabulary"] = float(np.mean([sentences.in_vocabulary(t) for t in texts]))
    metrics["sentences_finished"] = float(np.mean(finished))
    examples += ["S:" + t for t in texts[:5]]

    key, sub = jax.random.split(key)
    texts, _ = generate(lm, [[bos]] * 8, 80, sub, temperature=1.0)
    examples += ["<|endoftext|>" + t for t in texts[:4]]
    metrics["eval_time_s"] = round(time.time() - t0, 1)
    return metrics, examples


def evaluate_hard(path, task: str, n_problems: int, samples_per_problem: int, seed: int, split: str = "dev",
                  chunk: int = 16):
    """Plain sampling on a harder task (:mod:`tasks.chains`, :mod:`tasks.multistep`): accuracy at temperature 1,
    pass@k (at least one of ``samples_per_problem`` samples right), greedy accuracy, and
    accuracy by number of steps. ``split`` is "dev" (for choosing) or "eval" (for reporting).
    Sampling is ``models.sample`` with ``chunk`` prompts per compiled call."""
    from genppl import models

    lm = models.load(path)
    tok = lm.tokenizer
    bos = tok.bos_id if tok.bos_id is not None else lm.eos_id
    key = jax.random.key(seed)
    module = HARD_TASKS[task]
    problems = module.problems(split, n_problems)
    prompts = [[bos] + tok.encode(module.prompt_text(p)) for p in problems]
    k = samples_per_problem
    metrics = {"task": task, "split": split, "problems": n_problems, "samples_per_problem": k}
    t0 = time.time()

    def run(n, temperature, key):
        texts, finished = [], []
        for start in range(0, len(prompts), chunk):
            part = prompts[start:start + chunk]
            real = len(part)
            part = part + [part[-1]] * (chunk - real)  # one shape for every call
            key, sub = jax.random.split(key)
            out = models.sample(lm, part, n, module.MAX_NEW_TOKENS, key=sub, temperature=temperature)
            for b in range(real):
                texts += list(out[b].texts)
                finished += [bool(f) for f in out[b].finished]
        return texts, finished

    key, sub = jax.random.split(key)
    texts, _ = run(1, 1e-10, sub)
    metrics["greedy_accuracy"] = module.accuracy(texts, problems)
    key, sub = jax.random.split(key)
    texts, finished = run(k, 1.0, sub)
    correct = np.array([module.is_correct(t, p) for t, p in zip(texts, [p for p in problems for _ in range(k)])])
    per_problem = correct.reshape(n_problems, k)
    metrics["t1_accuracy"] = float(correct.mean())
    metrics[f"pass@{k}"] = float(per_problem.any(1).mean())
    metrics["t1_steps_ok"] = float(np.mean([arithmetic.check_steps(t) for t in texts]))
    metrics["t1_answered"] = float(np.mean([module.extract_answer(t) is not None for t in texts]))
    metrics["t1_finished"] = float(np.mean(finished))
    by = {}
    for p, row in zip(problems, per_problem):
        by.setdefault(p.steps, []).append(row)
    metrics["by_steps"] = {s: {"problems": len(v), "t1_accuracy": round(float(np.mean(v)), 3),
                               f"pass@{k}": round(float(np.mean([r.any() for r in v])), 3)}
                           for s, v in sorted(by.items())}
    metrics["eval_time_s"] = round(time.time() - t0, 1)
    examples = [module.prompt_text(problems[i // k]) + texts[i] for i in range(0, 4 * k, k)]
    return metrics, examples


# ---------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "models" / "bundled"), help="checkpoint directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=2400)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=192, help="tokens per training row (inputs)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.05)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--n-arithmetic", type=int, default=50000)
    p.add_argument("--n-sentences", type=int, default=50000)
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--intermediate", type=int, default=688)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--max-positions", type=int, default=256)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--probe-every", type=int, default=200, help="teacher-forced held-out check")
    p.add_argument("--eval-n", type=int, default=200, help="held-out arithmetic problems")
    p.add_argument("--eval-samples", type=int, default=4, help="samples per problem at temperature 1")
    p.add_argument("--eval-sentences", type=int, default=500)
    p.add_argument("--n-multistep", type=int, default=0, help="harder problems (tasks.multistep) in the corpus")
    p.add_argument("--n-chains", type=int, default=0, help="longer problems (tasks.chains) in the corpus")
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop after this many steps (the schedule still spans --steps): less training")
    p.add_argument("--save-every", type=int, default=0,
                   help="also save the checkpoint every this many steps, to --out/../<name>-step<N>")
    p.add_argument("--init", default=None,
                   help="warm start from this checkpoint (its weights and tokenizer; the size options are ignored)")
    p.add_argument("--task", choices=["arithmetic", *HARD_TASKS], default="arithmetic",
                   help="what the evaluation measures (chains, multistep: a split, pass@--eval-samples)")
    p.add_argument("--eval-split", choices=["dev", "eval"], default="dev", help="split of a harder task to measure")
    p.add_argument("--reasoner", action="store_true",
                   help="the second bundled model's settings (models/bundled-reasoner; see its README)")
    p.add_argument("--answer-loss", action="store_true",
                   help="train word problems on their answers only (the question is context, not a target)")
    p.add_argument("--eval-only", action="store_true", help="only evaluate the checkpoint at --out")
    p.add_argument("--skip-eval", action="store_true")
    args = p.parse_args(argv)
    if args.reasoner:  # defaults of the second bundled model; explicit options still win
        given = {a.split("=")[0] for a in (sys.argv[1:] if argv is None else argv) if a.startswith("--")}
        for name, value in REASONER.items():
            if "--" + name.replace("_", "-") not in given:
                setattr(args, name, value)
    return args


#: Settings of the second bundled model (``--reasoner``): the bundled default model, fine-tuned
#: briefly on the longer problems of ``tasks.chains`` (answers only in the loss), so that plain
#: sampling is often wrong but rarely always wrong.
REASONER = {
    "out": str(ROOT / "models" / "bundled-reasoner"), "init": str(ROOT / "models" / "bundled"),
    "n_arithmetic": 10000, "n_sentences": 0, "n_chains": 60000, "steps": 1200, "lr": 1e-3, "warmup": 50,
    "task": "chains", "eval_samples": 16, "seq_len": 255, "answer_loss": True,
}


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out)
    WORK.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_default_matmul_precision", "highest")
    if not args.eval_only:
        t_start = time.time()
        docs = build_corpus(args.n_arithmetic, args.n_sentences, seed=args.seed, n_multistep=args.n_multistep,
                            n_chains=args.n_chains)
        log(f"corpus: {len(docs)} documents ({args.n_arithmetic} arithmetic, {args.n_sentences} sentences, "
            f"{args.n_multistep} multistep, {args.n_chains} chains), "
            f"{sum(map(len, docs)):,} characters")
        init = None
        if args.init:  # warm start: the checkpoint's weights and tokenizer
            from transformers import AutoTokenizer

            from genppl.models.architectures import load_checkpoint

            init, init_config = load_checkpoint(args.init)
            hf_tok = AutoTokenizer.from_pretrained(args.init)
            log(f"warm start from {args.init}")
        else:
            hf_tok = train_tokenizer(docs, args.vocab_size, args.max_positions)
        vocab = len(hf_tok)
        doc_ids = encode_docs(hf_tok, docs)
        skip = question_lengths(hf_tok, docs, doc_ids) if args.answer_loss else None
        tokens, mask = pack(doc_ids, args.seq_len + 1, eot=0, skip=skip)
        n_tok = sum(map(len, doc_ids)) + len(doc_ids)
        arith_len = [len(i) for i, d in zip(doc_ids, docs) if d.startswith("Q:")]
        sent_len = [len(i) for i, d in zip(doc_ids, docs) if d.startswith("S:")] or [0]
        log(f"tokenizer: {vocab} tokens; corpus {n_tok:,} tokens (arithmetic docs {np.mean(arith_len):.1f} "
            f"tokens on average, max {max(arith_len)}; sentences {np.mean(sent_len):.1f}); "
            f"{len(tokens)} rows of {args.seq_len + 1}, fill {mask.mean():.3f}")
        seen = args.steps * args.batch_size / len(tokens)
        log(f"training {args.steps} steps x {args.batch_size} rows = {seen:.2f} epochs")

        from genppl.models.architectures import save_checkpoint

        def save(decoder, where):
            where.mkdir(parents=True, exist_ok=True)
            save_checkpoint(decoder, config, where)
            hf_tok.save_pretrained(str(where))
            (where / "generation_config.json").write_text(json.dumps({
                "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0, "do_sample": True,
                "temperature": 1.0, "top_k": 0, "top_p": 1.0,
                "max_new_tokens": HARD_TASKS[args.task].MAX_NEW_TOKENS if args.task in HARD_TASKS else 64,
            }, indent=2) + "\n")

        def save_step(decoder, it):
            save(decoder, out.parent / f"{out.name}-step{it}")
            log(f"saved {out.parent / f'{out.name}-step{it}'}")

        config = make_config(args, vocab) if init is None else init_config
        decoder, stats = train(args, config, tokens, mask, answer_probe(hf_tok, 200, args.task), save_step, init)
        save(decoder, out)
        stats.update({
            "command": "python scripts/train_default_model.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "args": vars(args), "documents": len(docs), "corpus_tokens": n_tok, "rows": int(len(tokens)),
            "row_fill": float(mask.mean()), "epochs": seen, "vocab_size": vocab,
            "mean_arithmetic_doc_tokens": float(np.mean(arith_len)),
            "mean_sentence_doc_tokens": float(np.mean(sent_len)),
            "total_time_s": round(time.time() - t_start, 1),
        })
        (WORK / "train_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
        log(f"saved {out} ({sum(f.stat().st_size for f in out.iterdir()) / 1e6:.2f} MB); "
            f"final loss {stats['final_loss']:.4f}; training {stats['train_time_s']:.0f}s")
    if args.skip_eval:
        return
    if args.task in HARD_TASKS:
        metrics, examples = evaluate_hard(out, args.task, args.eval_n, args.eval_samples, args.seed, args.eval_split)
    else:
        metrics, examples = evaluate(out, args.eval_n, args.eval_samples, args.eval_sentences, args.seed)
    for e in examples:
        log("example: " + e.replace("\n", "\\n"))
    log("metrics: " + json.dumps(metrics, indent=2))
    name = "eval_metrics.json" if args.task == "arithmetic" else f"eval_metrics_{Path(out).name}_{args.eval_split}.json"
    (WORK / name).write_text(json.dumps({"metrics": metrics, "examples": examples}, indent=2) + "\n")


if __name__ == "__main__":
    main()
