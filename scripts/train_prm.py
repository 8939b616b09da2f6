#!/usr/bin/env python
"""Train the bundled process reward model (PRM) on the reasoner policy's own rollouts.

    python scripts/train_prm.py --problems 128 --steps 400 --likelihood --features-only --lr 3e-3 --eval-every 50
                                                 # the bundled PRM: writes models/bundled-prm, then measures it
    python scripts/train_prm.py --problems 16 --dev-problems 8 --steps 20 --out /tmp/prm   # a quick run

The Math-Shepherd recipe, in miniature:

1. sample ``--rollouts`` solutions per training problem (``--task``: :mod:`tasks.chains` or :mod:`tasks.multistep`, its
   ``"train"`` stream with ``--seed``; never the dev or eval problems) from the policy at
   temperature 1 (``models.sample``, many prompts per compiled call);
2. cut each solution into steps (a step ends at a token holding ``"."``); label each step
   by Monte-Carlo completion: from the prompt plus the solution up to that step, sample
   ``--completions`` continuations and take the fraction whose final answer is right
   (the last step, which states the answer, is labelled exactly: right or wrong). Equal
   prefixes of one problem are completed once;
3. besides the rollouts, ``--synthetic`` of each batch are misread solutions of other training
   problems (``chains.misread``: a wrong amount or sign taken from the question, or a slip,
   carried on to a wrong answer; 30% are the reference solution), with exact step labels
   (``on_track``). The rollouts teach what the policy writes; the misreadings, which the
   policy makes but which are rare and noisily labelled among its rollouts, teach the check;
4. the PRM is a copy of the policy's decoder with a scalar head (``LlamaForTokenClassification``,
   one label); it reads the question and the partial solution and is trained in JAX with optax
   (AdamW) on the soft labels by binary cross-entropy at each step's last token (or, with
   ``--every-token``, at every token of a step). With ``--likelihood`` the decoder stays the
   policy's and the head also reads the policy's log-probs of the solution (``models.prm``
   likelihood features); ``--features-only`` trains those 3 weights and the bias alone (the
   bundled PRM: see ``models/bundled-prm/README.md`` for why);
5. every ``--eval-every`` steps it is measured on held-out rollouts of ``--dev-problems`` dev
   problems (step-level AUC against the gold label: the task's ``on_track``, i.e. the steps so
   far are the reference solution's first steps; for the answer step, the answer is right) and
   the best checkpoint is kept; the reported numbers are on rollouts of ``--report-problems``
   problems of the eval split, which choose nothing: step AUC, the same AUC for the arithmetic
   step check (which cannot see misreadings), and the AUC of the final score for the answer.

Seeded by ``--seed``. Rollouts and labels are cached in ``scripts/_work/prm_data.json``
(keyed by the settings), so a re-run with other training options skips the sampling.
"""

from __future__ import annotations

import argparse
import json
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

from genppl import models  # noqa: E402
from genppl.tasks import arithmetic, chains, multistep  # noqa: E402

#: tasks with train/dev splits and gold step labels (``on_track``)
TASKS = {"chains": chains, "multistep": multistep}

WORK = ROOT / "scripts" / "_work"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sample_many(lm, prompts: list[list[int]], n: int, max_new_tokens: int, key, chunk: int):
    """``n`` samples (generated ids, EOS dropped) of each prompt, ``chunk`` prompts per compiled
    call (the last chunk padded with copies, so every call has one shape)."""
    out = []
    for start in range(0, len(prompts), chunk):
        part = prompts[start:start + chunk]
        real = len(part)
        part = part + [part[-1]] * (chunk - real)
        key, sub = jax.random.split(key)
        room = lm.max_length - max(map(len, part))  # the context bounds a long prefix's completion
        steps = min(max_new_tokens, room // 32 * 32 if room >= 32 else room)  # few distinct shapes
        batch = models.sample(lm, part, n, steps, key=sub, temperature=1.0)
        for b in range(real):
            s = batch[b]
            out.append([[int(t) for t in ids[:k] if int(t) != lm.eos_id] for ids, k in zip(s.token_ids, s.num_tokens)])
    return out


def step_ends(lm, ids: list[int]) -> list[int]:
    """Indices of the tokens that end a step (their bytes hold ".")."""
    return [j for j, t in enumerate(ids) if b"." in lm.tokenizer.token_bytes[t]]


def encode_prompts(lm, task, problems) -> list[list[int]]:
    """BOS + the prompt of each problem."""
    return [[lm.eos_id] + lm.tokenizer.encode(task.prompt_text(p)) for p in problems]


def label_steps(lm, task, ids: list[int], problem) -> list[dict]:
    """The steps of a solution up to its answer: each one's last token, whether it states the
    answer, its gold label (on track; for the answer step, right) and the arithmetic check."""
    steps = []
    for j in step_ends(lm, ids):
        partial = lm.tokenizer.decode(ids[:j + 1])
        final = "The answer is" in partial
        gold = task.is_correct(partial, problem) if final else task.on_track(partial, problem)
        steps.append({"end": j, "final": final, "gold": bool(gold), "arith": bool(arithmetic.equations_hold(partial))})
        if final:
            break
    return steps


def collect(lm, task, problems, rollouts: int, completions: int, max_new: int, key, chunk: int, label: bool):
    """Rollouts of each problem, their step ends, and (with ``label``) Monte-Carlo step labels."""
    tok = lm.tokenizer
    prompts = encode_prompts(lm, task, problems)
    key, sub = jax.random.split(key)
    t0 = time.time()
    samples = sample_many(lm, prompts, rollouts, max_new, sub, chunk)
    log(f"  {len(problems)} x {rollouts} rollouts in {time.time() - t0:.0f}s")
    data = []
    todo = {}  # (problem, prefix) -> None: prefixes to complete
    for i, (p, rs) in enumerate(zip(problems, samples)):
        for ids in rs:
            text = tok.decode(ids)
            steps = label_steps(lm, task, ids, p)
            if label:
                todo.update(((i, tuple(ids[:s["end"] + 1])), None) for s in steps if not s["final"])
            data.append({"problem": i, "ids": ids, "text": text, "correct": task.is_correct(text, p),
                         "steps": steps})
    if label:
        keys = list(todo)
        log(f"  {len(keys)} distinct step prefixes to complete, {completions} completions each")
        t0 = time.time()
        key, sub = jax.random.split(key)
        keys.sort(key=lambda k: len(prompts[k[0]]) + len(k[1]))  # chunks of similar lengths
        comp = sample_many(lm, [prompts[i] + list(prefix) for i, prefix in keys], completions, max_new, sub, chunk)
        values = {}
        for (i, prefix), cs in zip(keys, comp):
            head = tok.decode(list(prefix))
            values[(i, prefix)] = float(np.mean([task.is_correct(head + tok.decode(c), problems[i]) for c in cs]))
        log(f"  completions in {time.time() - t0:.0f}s")
        for r in data:
            for s in r["steps"]:
                s["label"] = float(r["correct"]) if s["final"] else values[(r["problem"], tuple(r["ids"][:s["end"] + 1]))]
    return prompts, data


def synthetic(lm, task, problems, key: int, reference_fraction: float = 0.3):
    """Misread (and a ``reference_fraction`` of reference) solutions of ``problems``, as
    rollouts with exact step labels."""
    import random
    rng = random.Random(key)
    data = []
    for i, p in enumerate(problems):
        text = p.solution if rng.random() < reference_fraction else task.misread(p, rng)[0]
        ids = lm.tokenizer.encode(text)
        steps = [{**s, "label": float(s["gold"])} for s in label_steps(lm, task, ids, p)]
        data.append({"problem": i, "ids": ids, "text": text, "correct": task.is_correct(text, p), "steps": steps})
    return encode_prompts(lm, task, problems), data


def batch_arrays(prompts, data, width: int):
    """tokens [N, width]; positions of the step-end tokens, their labels, gold labels, arithmetic
    checks, answer-step flags and masks [N, S]; and every token's step label and mask [N, width]
    (a token takes the label of the step it belongs to; prompt tokens are masked out)."""
    smax = max(len(r["steps"]) for r in data)
    n = len(data)
    tokens = np.zeros((n, width), np.int32)
    pos = np.zeros((n, smax), np.int32)
    lab = np.zeros((n, smax), np.float32)
    gold = np.zeros((n, smax), np.float32)
    arith = np.zeros((n, smax), np.float32)
    final = np.zeros((n, smax), bool)
    mask = np.zeros((n, smax), np.float32)
    token_lab = np.zeros((n, width), np.float32)
    token_mask = np.zeros((n, width), np.float32)
    for k, r in enumerate(data):
        row = prompts[r["problem"]] + r["ids"]
        row = row[:width]
        tokens[k, :len(row)] = row
        offset = start = len(prompts[r["problem"]])
        for s, st in enumerate(r["steps"]):
            if offset + st["end"] >= width:
                break
            pos[k, s] = offset + st["end"]
            lab[k, s] = st.get("label", 0.0)
            gold[k, s], arith[k, s], final[k, s] = st["gold"], st["arith"], st["final"]
            mask[k, s] = 1.0
            token_lab[k, start:pos[k, s] + 1], token_mask[k, start:pos[k, s] + 1] = lab[k, s], 1.0
            start = pos[k, s] + 1
    return tokens, pos, lab, gold, arith, final, mask, token_lab, token_mask


def auc(scores, labels) -> float:
    """Area under the ROC curve (ties count one half); NaN when one class is missing."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, bool)
    pos, neg = scores[labels], scores[~labels]
    if not len(pos) or not len(neg):
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    allv = np.concatenate([pos, neg])[order]
    # average ranks over ties
    i = 0
    while i < len(allv):
        j = i
        while j + 1 < len(allv) and allv[j + 1] == allv[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", default=str(models.bundled_path("reasoner")), help="policy checkpoint directory")
    p.add_argument("--out", default=str(models.bundled_path("prm")))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--task", choices=sorted(TASKS), default="chains", help="the policy's task (its train and dev splits)")
    p.add_argument("--problems", type=int, default=96, help="training problems (the task's 'train' split)")
    p.add_argument("--rollouts", type=int, default=4, help="policy samples per problem")
    p.add_argument("--completions", type=int, default=4, help="Monte-Carlo completions per step prefix")
    p.add_argument("--dev-problems", type=int, default=48, help="dev problems whose rollouts choose the checkpoint")
    p.add_argument("--report-problems", type=int, default=48,
                   help="eval problems whose rollouts measure the result (they choose nothing)")
    p.add_argument("--synthetic", type=float, default=0.5,
                   help="fraction of each batch drawn from misread solutions with exact labels (chains only)")
    p.add_argument("--synthetic-problems", type=int, default=4096, help="training problems to misread")
    p.add_argument("--likelihood", action="store_true",
                   help="keep the policy's decoder as the trunk, unchanged, and train a head that also reads the "
                        "policy's log-probs of the solution (models.prm likelihood features)")
    p.add_argument("--features-only", action="store_true",
                   help="with --likelihood: the head reads the likelihood features alone (its hidden-state weights stay 0)")
    p.add_argument("--every-token", action="store_true",
                   help="put every token of a step in the loss, with the step's label (not only its last token)")
    p.add_argument("--eval-every", type=int, default=100, help="steps between dev measurements")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the task's MAX_NEW_TOKENS")
    p.add_argument("--chunk", type=int, default=32, help="prompts per compiled sampling call")
    p.add_argument("--steps", type=int, default=150, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--weight-decay", type=float, default=0.01)
    args = p.parse_args(argv)
    task = TASKS[args.task]
    if not 0 <= args.synthetic < 1:
        p.error(f"--synthetic is a fraction of each batch in [0, 1), got {args.synthetic}")
    if args.synthetic and not hasattr(task, "misread"):
        p.error(f"--task {args.task} has no misread solutions: pass --synthetic 0")
    args.max_new_tokens = args.max_new_tokens or task.MAX_NEW_TOKENS
    WORK.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_default_matmul_precision", "highest")
    import optax
    from flax import nnx

    policy = models.load(args.policy)
    key = jax.random.key(args.seed)
    cache_file = WORK / "prm_data.json"
    setting = {k: getattr(args, k) for k in ("policy", "task", "seed", "problems", "rollouts", "completions",
                                             "dev_problems", "report_problems", "max_new_tokens")}
    cached = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    train_problems = task.problems("train", args.problems, seed=1000 + args.seed)
    dev_problems = task.problems("dev", args.dev_problems)
    t_start = time.time()
    if cached.get("setting") == setting:
        log("rollouts and labels from the cache")
        train_prompts, train_data, dev_prompts, dev_data, rep_prompts, rep_data = (
            cached[k] for k in ("tp", "td", "dp", "dd", "rp", "rd"))
    else:
        log(f"training rollouts and Monte-Carlo labels ({args.problems} problems)")
        k1, k2 = jax.random.split(key)
        train_prompts, train_data = collect(policy, task, train_problems, args.rollouts, args.completions,
                                            args.max_new_tokens, k1, args.chunk, label=True)
        log(f"held-out rollouts ({args.dev_problems} dev problems)")
        dev_prompts, dev_data = collect(policy, task, dev_problems, args.rollouts, 0, args.max_new_tokens, k2,
                                        args.chunk, label=False)
        log(f"report rollouts ({args.report_problems} eval problems)")
        rep_prompts, rep_data = collect(policy, task, task.problems("eval", args.report_problems), args.rollouts, 0,
                                        args.max_new_tokens, jax.random.fold_in(k2, 1), args.chunk, label=False)
        cache_file.write_text(json.dumps({"setting": setting, "tp": train_prompts, "td": train_data,
                                          "dp": dev_prompts, "dd": dev_data, "rp": rep_prompts, "rd": rep_data}))
    sampling_time = time.time() - t_start
    if args.synthetic:
        syn_prompts, syn_data = synthetic(policy, task, task.problems("train", args.synthetic_problems,
                                                                      seed=2000 + args.seed), args.seed)
    else:
        syn_prompts, syn_data = [], []
    width = min(policy.max_length, max(len(pr[r["problem"]]) + len(r["ids"]) for pr, d in (
        (train_prompts, train_data), (dev_prompts, dev_data), (rep_prompts, rep_data), (syn_prompts, syn_data))
        for r in d))
    width = int(np.ceil(width / 16) * 16)
    tr = batch_arrays(train_prompts, train_data, width)
    dv = batch_arrays(dev_prompts, dev_data, width)
    rp = batch_arrays(rep_prompts, rep_data, width)
    sy = batch_arrays(syn_prompts, syn_data, width) if syn_data else None
    sd = batch_arrays(*synthetic(policy, task, task.problems("dev", 128), args.seed), width) if syn_data else None
    labels = tr[2][tr[6] > 0]
    log(f"train: {len(train_data)} rollouts, {int(tr[6].sum())} labelled steps (mean label {labels.mean():.3f}); "
        f"rollout accuracy {np.mean([r['correct'] for r in train_data]):.3f}")

    decoder = policy.module
    marker = None
    if args.likelihood:  # the prompt ends with this marker: the solution's log-probs count after it
        marker = policy.tokenizer.encode("\nA:")
        assert all(p[-len(marker):] == marker for p in train_prompts + dev_prompts + rep_prompts), marker
    prm = models.ProcessRewardModel.from_decoder(decoder, policy.config, policy.tokenizer, key=args.seed,
                                                 marker=marker)
    prm.head = jax.tree.map(jnp.zeros_like, prm.head)
    adamw = optax.adamw(optax.warmup_cosine_decay_schedule(
        0.0, args.lr, min(10, args.steps // 2), max(args.steps, 11), args.lr * 0.1), weight_decay=args.weight_decay)
    if args.likelihood:  # the trunk stays the policy's (its log-probs are the features): train the head only
        head_labels = {k: "frozen" if k == "w" and args.features_only else "train" for k in prm.head}
        adamw = optax.multi_transform({"train": adamw, "frozen": optax.set_to_zero()},
                                      (jax.tree.map(lambda _: "frozen", prm.params), head_labels))
    tx = optax.chain(optax.clip_by_global_norm(1.0), adamw)
    opt_state = tx.init((prm.params, prm.head))

    def scores_at(model, tokens, pos):
        return jnp.take_along_axis(model.forward(tokens), pos, 1)

    def loss_fn(trainable, static, tokens, pos, lab, mask):
        if args.likelihood:
            trainable = (jax.lax.stop_gradient(trainable[0]), trainable[1])
        model = jax.tree_util.tree_unflatten(static, [*jax.tree.leaves(trainable)])
        z = model.forward(tokens) if args.every_token else scores_at(model, tokens, pos)
        bce = optax.sigmoid_binary_cross_entropy(z, lab)
        return jnp.sum(bce * mask) / jnp.maximum(mask.sum(), 1.0)

    static = jax.tree_util.tree_structure(prm)

    @jax.jit
    def update(trainable, opt_state, tokens, pos, lab, mask):
        loss, grads = jax.value_and_grad(loss_fn)(trainable, static, tokens, pos, lab, mask)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, updates), opt_state, loss

    @jax.jit
    def predict(trainable, tokens, pos):
        model = jax.tree_util.tree_unflatten(static, [*jax.tree.leaves(trainable)])
        return scores_at(model, tokens, pos)

    def scores(trainable, arrays):
        out = []
        for s in range(0, len(arrays[0]), 64):
            out.append(np.asarray(predict(trainable, jnp.asarray(arrays[0][s:s + 64]), jnp.asarray(arrays[1][s:s + 64]))))
        return np.concatenate(out)

    def held_out_metrics(trainable, arrays):
        z = scores(trainable, arrays)
        m, gold, final = arrays[6] > 0, arrays[3] > 0, arrays[5]
        return {"step_auc_gold": auc(z[m], gold[m]),
                "step_auc_gold_equations_only": auc(z[m & ~final], gold[m & ~final]),
                "final_auc_correct": auc(z[m & final], gold[m & final])}

    trainable = (prm.params, prm.head)
    rng = np.random.default_rng(args.seed)
    n_syn = int(round(args.batch_size * args.synthetic))
    t0 = time.time()
    losses, history = [], []
    best = (-1.0, 0, trainable)
    fields = (0, 1, 7, 8) if args.every_token else (0, 1, 2, 6)  # tokens, positions, labels, mask
    for it in range(1, args.steps + 1):
        idx = rng.choice(len(tr[0]), size=args.batch_size - n_syn, replace=len(tr[0]) < args.batch_size)
        batch = [tr[f][idx] for f in fields]
        if n_syn:
            sdx = rng.choice(len(sy[0]), size=n_syn, replace=False)
            batch = [np.concatenate([b, sy[f][sdx]]) for b, f in zip(batch, fields)]
        trainable, opt_state, loss = update(trainable, opt_state, *map(jnp.asarray, batch))
        losses.append(float(loss))
        if it % 25 == 0 or it == args.steps:
            log(f"step {it}/{args.steps} loss {np.mean(losses[-25:]):.4f} ({time.time() - t0:.0f}s)")
        if it % args.eval_every == 0 or it == args.steps:
            dev_auc = held_out_metrics(trainable, dv)["step_auc_gold"]
            history.append((it, round(dev_auc, 4)))
            misread = f"; on misread dev solutions {held_out_metrics(trainable, sd)['step_auc_gold']:.3f}" if sd else ""
            log(f"  dev step AUC {dev_auc:.3f}{misread}")
            if dev_auc > best[0]:
                best = (dev_auc, it, trainable)
    train_time = time.time() - t0
    dev_auc, best_step, trainable = best
    metrics = held_out_metrics(trainable, rp)
    m = rp[6] > 0
    metrics["arithmetic_check_step_auc_gold"] = auc(rp[4][m], rp[3][m] > 0)
    metrics.update({"chosen_step": best_step, "dev_step_auc_gold": dev_auc, "dev_history": history,
                    "report_rollouts": len(rep_data), "report_steps": int(m.sum()),
                    "report_gold_positive_rate": float(rp[3][m].mean()),
                    "report_rollout_accuracy": float(np.mean([r["correct"] for r in rep_data])),
                    "synthetic_solutions": len(syn_data), "synthetic_fraction": args.synthetic,
                    "train_rollouts": len(train_data), "train_steps": int(tr[6].sum()),
                    "train_mean_label": float(labels.mean()), "final_loss": float(np.mean(losses[-25:])),
                    "sampling_time_s": round(sampling_time, 1), "train_time_s": round(train_time, 1),
                    "command": "python scripts/train_prm.py " + " ".join(sys.argv[1:] if argv is None else argv)})
    # labels of the training steps against gold (how noisy the Monte-Carlo estimates are)
    mt = tr[6] > 0
    metrics["train_mc_label_auc_gold"] = auc(tr[2][mt], tr[3][mt] > 0)
    log("metrics: " + json.dumps(metrics, indent=2))
    prm.params, prm.head = trainable
    out = Path(args.out)
    prm.save(out)
    log(f"saved {out} ({sum(f.stat().st_size for f in out.iterdir()) / 1e6:.2f} MB)")
    (WORK / "prm_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


if __name__ == "__main__":
    main()
