"""Loading transformer checkpoints (models/transformer.py): dtypes, the EOS id, the tokenizer's
size, and every corrupt or missing file as one CheckpointError (an InputError) naming the file."""

import json
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genppl import models
from genppl.models import InputError, sample
from genppl.models.architectures import CheckpointError
from tests.compile_count import count_compiles
from tests.hlo import elements, loop_body_ops


@pytest.fixture()
def copy(llama_checkpoint, tmp_path):
    """A fresh copy of the package's tiny checkpoint, to damage."""
    path = tmp_path / "ckpt"
    shutil.copytree(llama_checkpoint[0], path)
    return path


def edit_json(path, name, edit):
    data = json.loads((path / name).read_text())
    edit(data)
    (path / name).write_text(json.dumps(data))


def test_bfloat16_load_runs(llama_checkpoint):
    lm16 = models.load(llama_checkpoint[0], dtype="bfloat16")
    out = sample(lm16, [1, 2], 2, 4, jax.random.key(0))
    assert np.all(np.isfinite(out.log_probs))


def test_missing_directory_and_tokenizer(tmp_path, copy):
    with pytest.raises(CheckpointError, match="does not exist|not found|no such"):
        models.load(tmp_path / "nowhere")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (copy / f).unlink()
    with pytest.raises(CheckpointError, match="no tokenizer files"):
        models.load(copy)


def test_unknown_dtype(llama_checkpoint):
    with pytest.raises(CheckpointError, match="use 'float32' or 'bfloat16'"):
        models.load(llama_checkpoint[0], dtype="float8")


def test_loading_twice_shares_compiled_programs(llama_checkpoint, llama_lm):
    """Two loads of one checkpoint are equal static jit arguments (no recompilation)."""
    sample(llama_lm, [1, 2, 3], 3, 5, 0)
    again = models.load(llama_checkpoint[0])
    with count_compiles() as compiles:
        out = sample(again, [1, 2, 3], 3, 5, 0)
    assert compiles.count == 0, compiles
    np.testing.assert_array_equal(out.token_ids, sample(llama_lm, [1, 2, 3], 3, 5, 0).token_ids)


# ---- the EOS id (issue 11, case 7) -------------------------------------------------------
def remove_eos(path):
    edit_json(path, "config.json", lambda c: c.pop("eos_token_id", None))
    edit_json(path, "generation_config.json", lambda c: c.pop("eos_token_id", None))
    edit_json(path, "tokenizer_config.json", lambda c: c.pop("eos_token", None))


def test_a_checkpoint_without_eos_is_refused_with_the_field_to_add(copy):
    remove_eos(copy)
    with pytest.raises(CheckpointError, match='names no EOS token: add "eos_token_id": <id> to config.json') as err:
        models.load(copy)
    assert "eos_id=" in str(err.value)


def test_an_explicit_eos_id_is_used(copy):
    remove_eos(copy)
    lm = models.load(copy, eos_id=5)
    assert lm.eos_id == 5 and lm.tokenizer.eos_id == 5
    with pytest.raises(InputError, match=r"eos_id must be a token id in \[0, 384\)"):
        models.load(copy, eos_id=384)


def test_eos_is_read_from_the_files_not_from_config_class_defaults(copy):
    remove_eos(copy)
    edit_json(copy, "generation_config.json", lambda c: c.update(eos_token_id=[9, 10]))
    assert models.load(copy).eos_id == 9
    edit_json(copy, "generation_config.json", lambda c: c.pop("eos_token_id"))
    edit_json(copy, "config.json", lambda c: c.update(eos_token_id=7))
    lm = models.load(copy)
    assert lm.eos_id == 7 and lm.config.eos_token_id == 7  # LlamaConfig's default would be 2


# ---- the tokenizer's size (issue 11, case 8) ---------------------------------------------
def test_a_tokenizer_larger_than_the_vocabulary_is_refused_at_load(copy):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(copy))
    tok.add_tokens([f"<extra_{i}>" for i in range(384 - len(tok) + 10)])
    tok.save_pretrained(str(copy))
    with pytest.raises(CheckpointError, match=r"the tokenizer has 394 tokens but the model's vocabulary "
                                              r"\(vocab_size in config.json\) has 384") as err:
        models.load(copy)
    assert str(copy) in str(err.value)


# ---- corrupt files (issue 11, case 9) ----------------------------------------------------
def truncate(file):
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def garbage(file):
    file.write_bytes(np.random.default_rng(0).bytes(4000))


@pytest.mark.parametrize("name, damage, message", [
    ("model.safetensors", truncate, "is not a readable safetensors file"),
    ("model.safetensors", garbage, "is not a readable safetensors file"),
    ("model.safetensors", lambda f: f.write_bytes(b""), "is not a readable safetensors file"),
    ("tokenizer.json", truncate, "is not valid JSON"),
    ("tokenizer.json", garbage, "is not valid JSON"),
    ("tokenizer.json", lambda f: f.write_text('{"a": 1}'), "cannot load the tokenizer"),
    ("tokenizer_config.json", truncate, "is not valid JSON"),
    ("config.json", truncate, "is not valid JSON"),
    ("config.json", garbage, "is not valid JSON"),
    ("config.json", lambda f: f.write_text("[1, 2]"), "holds a JSON list, not an object"),
    ("generation_config.json", truncate, "is not valid JSON"),
], ids=["weights-truncated", "weights-garbage", "weights-empty", "tokenizer-truncated", "tokenizer-garbage",
        "tokenizer-wrong-json", "tokenizer-config-truncated", "config-truncated", "config-garbage", "config-list",
        "generation-config-truncated"])
def test_a_corrupt_file_is_one_error_naming_it(copy, name, damage, message):
    damage(copy / name)
    with pytest.raises(CheckpointError, match=message) as err:
        models.load(copy)
    text = str(err.value)
    assert isinstance(err.value, InputError)
    assert str(copy / name) in text or (name == "tokenizer.json" and str(copy) in text), text
    assert any(fix in text for fix in ("save_pretrained", "download it again", "re-save")), text
    assert err.value.__cause__ is None or isinstance(err.value.__cause__, CheckpointError)


def test_a_missing_config_field_is_a_checkpoint_error(copy):
    edit_json(copy, "config.json", lambda c: c.update(hidden_size="wide"))
    with pytest.raises(CheckpointError, match="config.json is not a valid llama config"):
        models.load(copy)


# ---- resampling moves only the filled part of the cache (issue 12) ------------------------------
def _decode_steps(lm, state, tokens):
    return jax.lax.fori_loop(0, tokens.shape[1], lambda i, s: lm.extend(s, tokens[:, i]), state)


@pytest.mark.parametrize("filled", [19, 37])
def test_gather_moves_only_filled_slots_and_later_steps_are_bit_identical(llama_lm, filled):
    """``TransformerLM.gather`` copies each particle's generated keys up to the longest filled
    row and leaves the slots past it: the moved slots equal the whole-buffer gather's, and decoding
    on from either gives the same logits bit for bit (a slot is written before it is read).
    A 40-slot cache: 19 tokens move two 16-slot blocks; 37 move three, the last one overlapping
    the one before (slots 24-39)."""
    from genppl.models.interface import LanguageModel

    n = 5
    rng = np.random.RandomState(0)
    state = llama_lm.prefill([1, 2, 3], n, 40)
    state = jax.jit(_decode_steps)(llama_lm, state, jnp.asarray(rng.randint(1, 30, (n, filled)), jnp.int32))
    idx = jnp.array([3, 3, 0, 4, 1])
    ours = jax.jit(llama_lm.gather)(state, idx)
    whole = jax.jit(LanguageModel.gather)(state, idx)
    assert int((state.length - state.prompt_length).max()) == filled and state.cache["k"][0].shape[1] == 40
    for a, b in zip(jax.tree.leaves((ours.cache["k"], ours.cache["v"])), jax.tree.leaves((whole.cache["k"], whole.cache["v"]))):
        np.testing.assert_array_equal(np.asarray(a)[:, :filled], np.asarray(b)[:, :filled])
    rest = lambda s: jax.tree.leaves(s.replace(cache={k: v for k, v in s.cache.items() if k not in ("k", "v")}))  # noqa: E731
    for a, b in zip(rest(ours), rest(whole)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    more = jnp.asarray(rng.randint(1, 30, (n, 3)), jnp.int32)
    a, b = (jax.jit(_decode_steps)(llama_lm, s, more) for s in (ours, whole))
    np.testing.assert_array_equal(np.asarray(a.logits), np.asarray(b.logits))
    np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))


def test_gather_to_another_number_of_particles_equals_the_whole_buffer_gather(llama_lm):
    """Indices that fan particles out or in (rollouts, expansions) get a new buffer: the same
    arrays as the base gather, bit for bit."""
    from genppl.models.interface import LanguageModel

    state = llama_lm.prefill([1, 2, 3], 3, 24)
    state = jax.jit(_decode_steps)(llama_lm, state, jnp.asarray(np.arange(1, 16).reshape(3, 5), jnp.int32))
    for idx in (jnp.array([0, 0, 1, 1, 2, 2, 2]), jnp.array([2, 0])):
        ours, whole = llama_lm.gather(state, idx), LanguageModel.gather(state, idx)
        assert ours.cache["k"][0].shape[0] == len(idx)
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(whole)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _resample_decode_loop(lm, state, key):
    """Six decode steps of ``state``'s particles, resampled (sorted random ancestors) before every
    other step."""
    n = state.num_particles

    def body(i, s):
        idx = jnp.sort(jax.random.randint(jax.random.fold_in(key, i), (n,), 0, n))
        moved = jax.lax.cond(i % 2 == 0, lambda s: lm.gather(s, idx), lambda s: s, s)
        return lm.extend(moved, jnp.full((n,), 5, jnp.int32))
    return jax.lax.fori_loop(0, 6, body, state)


def test_resampling_in_a_loop_copies_no_whole_cache(llama_lm):
    """The optimised HLO of a loop of (resample, decode) steps holds no copy of a cache-sized array:
    the gather writes its blocks in place into the loop's cache (a switch over buckets, or a
    gather of the whole buffer, makes XLA copy every layer's cache at each resampling)."""
    state = llama_lm.prefill([1, 2, 3], 4, 40)
    size = int(np.prod(state.cache["k"][0].shape))
    ops = loop_body_ops(jax.jit(_resample_decode_loop).lower(llama_lm, state, jax.random.key(0)).compile().as_text())
    assert any(" scatter(" in op for op in ops), "no block write found"

    copies = [op.strip()[:160] for op in ops if re.search(r"\bcopy\(", op) and elements(op) >= size]
    assert not copies, copies


def test_resampling_under_the_prompt_axis_updates_no_whole_cache(llama_lm):
    """Under a batch's prompt axis (``jax.vmap``) the gather's block writes stay scatters: no
    update of a cache-sized array in the loop (a ``dynamic_update_slice`` becomes a clipped
    scatter under vmap, which XLA:CPU rewrote as a select-and-update fusion over the whole cache
    at every block, 1.15x slower for SMC over 64 prompts: this check fails on it)."""
    from genppl.models.batch import PROMPT_AXIS, pad_prompts

    n = 4
    tokens, lengths, _, capacity = pad_prompts(llama_lm, [[1, 2, 3], [4, 5, 6, 7, 8]], 40)

    def batch(lm, tokens, lengths, keys):
        one = lambda t, k, key: _resample_decode_loop(lm, lm.initial_state(t, k, n, capacity), key)
        return jax.vmap(one, axis_name=PROMPT_AXIS)(tokens, lengths, keys)

    keys = jax.random.split(jax.random.key(0), 2)
    ops = loop_body_ops(jax.jit(batch).lower(llama_lm, tokens, lengths, keys).compile().as_text())
    size = 2 * int(np.prod(llama_lm.initial_state(tokens[0], lengths[0], n, capacity).cache["k"][0].shape))
    updates = [op.strip()[:160] for op in ops if re.search(r"\bdynamic-update-slice\(", op) and elements(op) >= size]
    assert any(" scatter(" in op for op in ops), "no block write found"
    assert not updates, updates
