"""Small real models built offline: a BPE tokenizer trained on Python's docs, and models from configs."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from harvest.models import NATIVE_CONFIG_FILE, NATIVE_WEIGHTS_FILE

SPECIAL = "<|endoftext|>"


def save_tokenizer(folder: Path, vocab_size: int = 512) -> None:
    """A byte-level BPE tokenizer, saved then reloadable (an in-memory one breaks TransformerLens)."""
    import pydoc_data.topics

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [pydoc_data.topics.topics[key] for key in sorted(pydoc_data.topics.topics)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[SPECIAL], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(texts, trainer)
    PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=SPECIAL, eos_token=SPECIAL).save_pretrained(folder)


def native_model(folder: Path, n_layers: int = 2, d_model: int = 32, d_mlp: int = 64, act_fn: str = "gelu",
                 n_ctx: int = 64, vocab_size: int = 512, seed: int = 0) -> Path:
    """A random TransformerLens model built from a config, saved as a native folder harvest can load."""
    from safetensors.torch import save_file
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    save_tokenizer(folder, vocab_size)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = {
        "n_layers": n_layers, "d_model": d_model, "d_mlp": d_mlp, "n_heads": 4, "d_head": d_model // 4,
        "n_ctx": n_ctx, "d_vocab": len(tokenizer), "act_fn": act_fn, "normalization_type": "LN", "seed": seed,
    }
    bridge = TransformerBridge.boot_native(TransformerBridgeConfig(**config), tokenizer=tokenizer)
    (folder / NATIVE_CONFIG_FILE).write_text(json.dumps(config))
    save_file({name: tensor.contiguous() for name, tensor in bridge.state_dict().items()}, folder / NATIVE_WEIGHTS_FILE)
    return folder


def hf_gpt2(folder: Path, n_layers: int = 2, d_model: int = 32, n_ctx: int = 64, seed: int = 0) -> Path:
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    save_tokenizer(folder)
    vocab = len(AutoTokenizer.from_pretrained(folder))
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab, n_positions=n_ctx, n_embd=d_model, n_layer=n_layers, n_head=4,
                        bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def hf_llama(
    folder: Path, n_layers: int = 2, d_model: int = 32, d_mlp: int = 48, n_ctx: int = 64, seed: int = 0
) -> Path:
    """A gated (SwiGLU) Llama-style model: its neurons fire negative too."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    save_tokenizer(folder)
    vocab = len(AutoTokenizer.from_pretrained(folder))
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=d_model,
        intermediate_size=d_mlp,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=n_ctx,
        bos_token_id=0,
        eos_token_id=0,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder
