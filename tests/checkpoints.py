"""Tiny random-initialised Hugging Face checkpoints made on the spot (no hub access)."""

from pathlib import Path

TEXT = ["the cat sat on the mat.", "a dog ran in the park with a red ball.", "Q: 12 + 7 = 19. A: 19"] * 20


def save_tokenizer(path: Path, vocab_size: int = 120):
    """A small byte-level BPE tokenizer with <|endoftext|> as EOS/BOS/pad."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TEXT, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                   bos_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.save_pretrained(str(path))
    return fast


def save_llama(path: Path, vocab_size: int = 384, seed: int = 0, **overrides):
    """A 2-layer Llama with its tokenizer; returns the torch model."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    fast = save_tokenizer(path, vocab_size=vocab_size - 64)
    config = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                  eos_token_id=fast.eos_token_id, bos_token_id=fast.bos_token_id, tie_word_embeddings=False)
    config.update(overrides)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**config)).eval()
    model.save_pretrained(str(path))
    return model
