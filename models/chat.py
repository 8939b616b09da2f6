"""Chat templates, BOS and the several EOS ids of real checkpoints.

* :func:`chat_ids`: prompt ids of a conversation from the checkpoint's own chat template
  (the Jinja template in tokenizer_config.json), rendered by ``transformers``'
  ``apply_chat_template``: the same ids a PyTorch user of the checkpoint gets. The template
  writes the BOS text itself where the model wants one (Llama 3's ``{{ bos_token }}``), so the
  rendered text is tokenized without adding special tokens again, as transformers does.
* :func:`text_ids`: a plain-text prompt with the special tokens the tokenizer's own settings
  add (Llama 3 prepends ``<|begin_of_text|>``, Qwen2 adds nothing).
* :func:`eos_ids_of_checkpoint`: every end-of-sequence id a checkpoint names
  (generation_config.json's ``eos_token_id`` may be a list: Llama 3 ends on ``<|eot_id|>`` and
  ``<|end_of_text|>``, Qwen2 on ``<|im_end|>`` and ``<|endoftext|>``).
* :func:`fold_eos`: how several EOS ids end a sequence. Finishing is one event whose
  probability is the sum over the EOS ids, so the logits of the main id become
  ``logsumexp`` of all of them and the other ids get ``-inf``:

      p'(eos_id | x) = sum_{e in eos_ids} p(e | x),   p'(e | x) = 0 for the other e,

  which leaves every other token's probability and the law of every finished text unchanged;
  kernels, potentials and proposals then see one EOS, ``lm.eos_id``. (A sequence scored with
  ``lm.score`` must therefore end in ``lm.eos_id``.)
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp

__all__ = ["chat_ids", "eos_ids_of_checkpoint", "fold_eos", "text_ids"]


def _hf(tokenizer):
    from .interface import InputError

    hf = getattr(tokenizer, "hf", None)
    if hf is None:
        raise InputError(f"{type(tokenizer).__name__} has no Hugging Face tokenizer, so no chat template: "
                         "format the prompt yourself and encode it with lm.tokenizer.encode(text)")
    return hf


def chat_ids(tokenizer, messages, add_generation_prompt: bool = True, **template_kwargs) -> list[int]:
    """Prompt ids of ``messages`` ([{"role": ..., "content": ...}, ...]) rendered by the
    checkpoint's chat template; equal to ``hf_tokenizer.apply_chat_template(messages,
    add_generation_prompt=..., tokenize=True)``. Extra keyword arguments go to the template
    (``tools=``, ``enable_thinking=``, ...)."""
    from .interface import InputError

    hf = _hf(tokenizer)
    if not getattr(hf, "chat_template", None):
        raise InputError("this checkpoint's tokenizer has no chat template (no 'chat_template' in "
                         "tokenizer_config.json or chat_template.jinja): format the prompt yourself and use "
                         "models.chat.text_ids(lm.tokenizer, text)")
    if not isinstance(messages, (list, tuple)) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages):
        raise InputError("messages must be a non-empty list of {'role': str, 'content': str} dicts, e.g. "
                         "[{'role': 'user', 'content': 'Hi'}]")
    try:
        ids = hf.apply_chat_template(list(messages), add_generation_prompt=add_generation_prompt, tokenize=True,
                                     **template_kwargs)
    except Exception as e:  # noqa: BLE001 - jinja errors of the template (raise_exception(...) included)
        raise InputError(f"the chat template refused these messages ({type(e).__name__}: {e})") from None
    if isinstance(ids, dict) or hasattr(ids, "keys"):  # a BatchEncoding in recent transformers
        ids = ids["input_ids"]
    return [int(i) for i in ids]


def text_ids(tokenizer, text: str) -> list[int]:
    """Ids of a plain-text prompt with the special tokens (BOS) the tokenizer's settings add."""
    from .tokenizer import check_text

    check_text(text)
    hf = getattr(tokenizer, "hf", None)
    if hf is None:
        return list(tokenizer.encode(text))
    return [int(i) for i in hf.encode(text, add_special_tokens=True)]


def eos_ids_of_checkpoint(path, main: int, vocab_size: int) -> tuple[int, ...]:
    """``main`` first, then every other id of generation_config.json's ``eos_token_id`` (an
    int or a list), in file order, duplicates and ids outside the vocabulary dropped."""
    ids = [int(main)]
    file = Path(path) / "generation_config.json"
    if file.exists():
        try:
            value = json.loads(file.read_text()).get("eos_token_id")
        except (OSError, ValueError):  # the EOS resolution reads (and reports) this file first
            value = None
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < vocab_size and v not in ids:
                ids.append(v)
    return tuple(ids)


def fold_eos(logits: jax.Array, eos_ids) -> jax.Array:
    """Logits [..., V] with every EOS id's probability moved onto the first (module docstring)."""
    eos_ids = tuple(int(i) for i in eos_ids)
    if len(eos_ids) <= 1:
        return logits
    logits = jnp.asarray(logits)
    main, others = eos_ids[0], jnp.asarray(eos_ids[1:])
    total = jax.nn.logsumexp(logits[..., jnp.asarray(eos_ids)].astype(jnp.float32), axis=-1)
    logits = logits.at[..., main].set(total.astype(logits.dtype))
    return logits.at[..., others].set(-jnp.inf)
