"""The bundled default model: standard Hugging Face files that transformers loads as well."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from genppl import models
from genppl.tasks import arithmetic, sentences

PATH = models.bundled_path()
advance = jax.jit(models.LanguageModel.advance)  # the verbs do not jit themselves


@pytest.fixture(scope="module")
def lm():
    return models.load()


def test_files_are_standard_and_small():
    for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md"):
        assert (PATH / name).is_file(), f"bundled model lacks {name}"
    total = sum(f.stat().st_size for f in PATH.iterdir())
    assert total < 20 * 2 ** 20, f"bundled model is {total / 2 ** 20:.1f} MiB, over 20 MiB"
    config = json.loads((PATH / "config.json").read_text())
    assert config["model_type"] == "llama"


def test_transformers_loads_the_same_files_and_logits_match(lm):
    torch_model = transformers.AutoModelForCausalLM.from_pretrained(PATH).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(PATH)
    texts = [arithmetic.prompt_text(p) for p in arithmetic.eval_problems(3)] + [sentences.prompt_text()]
    for text in texts:
        ids = [lm.tokenizer.bos_id] + lm.tokenizer.encode(text)
        assert ids == hf_tok(text)["input_ids"], "our encoding differs from AutoTokenizer's"
        with torch.no_grad():
            want = torch.log_softmax(torch_model(torch.tensor([ids])).logits[0], -1).numpy()
        state = lm.prefill(ids[:1], 1, len(ids))
        state, got = advance(lm, state, jnp.asarray([ids[1:]]), jnp.ones((1, len(ids) - 1), bool))
        np.testing.assert_allclose(np.asarray(got[0]), want[np.arange(len(ids) - 1), ids[1:]], atol=1e-4)
        np.testing.assert_allclose(np.asarray(lm.log_probs(state)[0]), want[-1], atol=1e-4)


def test_tokenizer_bytes_and_special_tokens(lm):
    tok = lm.tokenizer
    assert tok.eos_id == tok.bos_id == lm.eos_id == 0
    assert tok.token_bytes[0] == b""
    text = arithmetic.document(arithmetic.eval_problems(1)[0])
    ids = tok.encode(text)
    assert tok.decode_bytes(ids).decode() == text == tok.decode(ids)
    # digits are single tokens, so a number's spelling is unambiguous
    assert all(len(tok.encode(d)) == 1 for d in "0123456789")


def test_bundled_model_writes_the_corpus_format(lm):
    """Sampled answers to held-out problems mostly end in a parsable "The answer is N."."""
    import jax

    problem = arithmetic.eval_problems(1)[0]
    prompt = [lm.tokenizer.bos_id] + lm.tokenizer.encode(arithmetic.prompt_text(problem))
    out = models.sample(lm, prompt, 16, 64, jax.random.key(0))
    parsed = [arithmetic.extract_answer(t) for t in out.texts]
    assert sum(a is not None for a in parsed) >= 12, out.texts


def test_a_million_particles_fail_up_front(lm):
    """issue 11 case 10: the KV cache of 10**6 particles is refused in < 2 s with its size."""
    import time

    start = time.perf_counter()
    with pytest.raises(models.InputError, match=r"1000000 particles with a buffer of 80 tokens need about") as err:
        models.sample(lm, lm.tokenizer.encode("S:"), n=10**6, max_new_tokens=64, key=0)
    assert time.perf_counter() - start < 2.0
    assert f"{lm.state_bytes(10**6, 80):,} bytes" in str(err.value)
