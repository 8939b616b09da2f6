"""models.chat: prompt ids from the checkpoint's chat template equal transformers'
apply_chat_template for tiny Qwen2- and Llama-3-style checkpoints; every EOS id of
generation_config.json ends a sequence (their probabilities folded onto lm.eos_id, checked
against PyTorch); BOS as the tokenizer's settings say; bad input."""

import json

import jax
import numpy as np
import pytest

from genppl import models
from genppl.models import InputError
from genppl.models.chat import fold_eos, text_ids
from tests.checkpoints import save_tokenizer

# templates in the style of the two families (written here, not copied): Qwen2 wraps turns
# in <|im_start|>role ... <|im_end|>; Llama 3 starts with the BOS text and uses header ids
QWEN_TEMPLATE = (
    "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "12 + 7 = ?"},
            {"role": "assistant", "content": "19"}, {"role": "user", "content": "and 3 + 4?"}]


def save_chat_tokenizer(path, family: str):
    """A byte-level BPE tokenizer with the family's special tokens and chat template (and, for
    Llama 3, a post-processor that prepends BOS to plain text); returns the two EOS ids."""
    from tokenizers import processors

    fast = save_tokenizer(path, vocab_size=200)
    if family == "qwen2":
        fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
        fast.chat_template = QWEN_TEMPLATE
        fast.eos_token, fast.bos_token = "<|im_end|>", None
        eos = [fast.convert_tokens_to_ids("<|im_end|>"), fast.convert_tokens_to_ids("<|endoftext|>")]
    else:
        fast.add_special_tokens({"additional_special_tokens": ["<|begin_of_text|>", "<|start_header_id|>",
                                                               "<|end_header_id|>", "<|eot_id|>"]})
        fast.chat_template = LLAMA3_TEMPLATE
        fast.bos_token = "<|begin_of_text|>"
        bos = fast.convert_tokens_to_ids("<|begin_of_text|>")  # like Llama 3: plain text gets a BOS
        fast.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", bos)])
        eos = [fast.convert_tokens_to_ids("<|endoftext|>"), fast.convert_tokens_to_ids("<|eot_id|>")]
    fast.save_pretrained(str(path))
    return eos


def save_chat_checkpoint(path, family: str):
    """A 2-layer random Qwen2 or Llama model with :func:`save_chat_tokenizer`'s tokenizer and
    a generation_config.json listing two EOS ids."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    eos = save_chat_tokenizer(path, family)
    config_cls, model_cls = (Qwen2Config, Qwen2ForCausalLM) if family == "qwen2" else (LlamaConfig, LlamaForCausalLM)
    torch.manual_seed(0)
    config = config_cls(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                        eos_token_id=eos[0], tie_word_embeddings=False)
    model = model_cls(config).eval()
    model.save_pretrained(str(path))
    gen = json.loads((path / "generation_config.json").read_text())
    gen["eos_token_id"] = eos
    (path / "generation_config.json").write_text(json.dumps(gen))
    return model, eos


@pytest.fixture(scope="module", params=["qwen2", "llama3"])
def chat_tokenizer(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param + "-tok")
    save_chat_tokenizer(path, request.param)
    return request.param, path


# a model too: slow (torch model, a load and compilations, ~10 s per family)
@pytest.fixture(scope="module", params=[pytest.param("qwen2", marks=pytest.mark.slow),
                                        pytest.param("llama3", marks=pytest.mark.slow)])
def chat_checkpoint(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    model, eos = save_chat_checkpoint(path, request.param)
    return request.param, path, model, eos


def test_chat_ids_equal_transformers(chat_tokenizer):
    """models.chat.chat_ids (what lm.chat calls) on our Tokenizer wrapper equals a fresh
    AutoTokenizer's apply_chat_template, with and without the generation prompt; BOS as the
    tokenizer's settings say."""
    from transformers import AutoTokenizer

    family, path = chat_tokenizer
    tok = models.Tokenizer.from_pretrained(path)
    hf = AutoTokenizer.from_pretrained(str(path))  # a fresh load, as a PyTorch user would
    for add in (True, False):
        for messages in (MESSAGES, MESSAGES[1:2]):
            expected = hf.apply_chat_template(messages, add_generation_prompt=add, tokenize=True)
            expected = expected["input_ids"] if hasattr(expected, "keys") else expected
            assert models.chat.chat_ids(tok, messages, add_generation_prompt=add) == list(expected)
    ids = models.chat.chat_ids(tok, MESSAGES[1:2])
    text = hf.decode(ids)
    if family == "llama3":
        assert ids[0] == hf.bos_token_id and text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
        assert text_ids(tok, "hi")[0] == hf.bos_token_id  # BOS from the tokenizer's settings
        assert ids.count(hf.bos_token_id) == 1  # the template's BOS text is not doubled
    else:
        assert text.endswith("<|im_start|>assistant\n")
        assert text_ids(tok, "hi") == tok.encode("hi")  # Qwen2 adds no BOS
    with pytest.raises(InputError, match="messages must be a non-empty list"):
        models.chat.chat_ids(tok, [{"role": "user"}])


def test_lm_chat_uses_the_checkpoint_template(chat_checkpoint):
    _, path, _, _ = chat_checkpoint
    lm = models.load(path)
    assert lm.chat(MESSAGES) == models.chat.chat_ids(lm.tokenizer, MESSAGES)


def test_every_eos_id_ends_a_sequence(chat_checkpoint):
    """lm.eos_ids lists generation_config.json's ids (lm.eos_id first); the model's law of
    ending is the sum over them, against PyTorch: log p'(eos) = logsumexp_e log p(e), the
    other EOS ids get probability 0 and every other token keeps its PyTorch log-probability."""
    import torch

    family, path, model, eos = chat_checkpoint
    lm = models.load(path)
    assert lm.eos_ids == tuple(eos) and lm.eos_id == eos[0]
    prompt = lm.chat(MESSAGES[1:2])
    state = lm.prefill(prompt, 2, 4)
    ours = np.asarray(jax.nn.log_softmax(lm.logits(state)[0]), np.float64)
    with torch.no_grad():
        ref = torch.log_softmax(model(torch.tensor([prompt])).logits[0, -1].double(), -1).numpy()
    np.testing.assert_allclose(ours[eos[0]], np.logaddexp(ref[eos[0]], ref[eos[1]]), atol=2e-4)
    assert ours[eos[1]] == -np.inf
    rest = np.setdiff1d(np.arange(ref.shape[0]), eos)
    np.testing.assert_allclose(ours[rest], ref[rest], atol=2e-4)


@pytest.mark.slow  # compiles the decode loop (~8 s)
def test_sampling_ends_at_the_main_eos(chat_checkpoint):
    """Sampled sequences never contain the second EOS id; they end (finished) at lm.eos_id."""
    _, path, _, eos = chat_checkpoint
    lm = models.load(path)
    samples = models.sample(lm, lm.chat(MESSAGES[1:2]), n=64, max_new_tokens=8, key=0)
    ids = np.asarray(samples.token_ids)
    assert not any(eos[1] in row[:k] for row, k in zip(ids, samples.num_tokens))  # (0-padded past the end)
    ends = [row[k - 1] for row, k, f in zip(ids, samples.num_tokens, samples.finished) if f]
    assert ends and all(e == eos[0] for e in ends)


def test_an_explicit_eos_id_is_the_only_one(chat_checkpoint):
    _, path, _, eos = chat_checkpoint
    assert models.load(path, eos_id=eos[1]).eos_ids == (eos[1],)


def test_fold_eos_moves_the_mass():
    logits = np.log(np.array([[0.1, 0.2, 0.3, 0.4]], np.float32))
    folded = np.asarray(fold_eos(logits, (3, 1)))
    np.testing.assert_allclose(np.exp(folded), [[0.1, 0.0, 0.3, 0.6]], atol=1e-6)
    assert np.array_equal(np.asarray(fold_eos(logits, (2,))), logits)


def test_models_without_a_template_say_so():
    with pytest.raises(InputError, match="has no Hugging Face tokenizer"):
        models.chat.chat_ids(models.CharTokenizer("$ab", eos_id=0), MESSAGES)


@pytest.mark.slow  # saves and loads a checkpoint (~5 s)
def test_a_checkpoint_without_a_template_says_so(tmp_path):
    from tests.checkpoints import save_llama

    save_llama(tmp_path)
    with pytest.raises(InputError, match="no chat template"):
        models.load(tmp_path).chat(MESSAGES)
