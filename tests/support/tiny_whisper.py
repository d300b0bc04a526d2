"""A tiny random Whisper, built offline: the speech recognizer of the tests where the pipeline's own
(`openai/whisper-large-v3-turbo`) cannot be downloaded."""

from __future__ import annotations

import json

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizerFast,
)


def build_tiny_whisper(out_dir) -> None:
    """A random two-layer Whisper with a byte-level BPE tokenizer, built offline; it transcribes gibberish."""
    words = "hello there this is a tiny random speech recognizer that says nothing useful".split()
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(words * 3, vocab_size=300, min_frequency=1, show_progress=False)
    vocab = bpe.get_vocab()
    merges = json.loads(bpe._tokenizer.to_str())["model"]["merges"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]
    specials = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>"]
    specials += ["<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
    for token in specials + [f"<|{i * 0.02:.2f}|>" for i in range(1501)]:
        vocab[token] = len(vocab)
    eot = "<|endoftext|>"
    tokenizer = WhisperTokenizerFast(
        vocab=vocab, merges=merges, unk_token=eot, bos_token=eot, eos_token=eot, pad_token=eot
    )
    tokenizer.add_special_tokens({"additional_special_tokens": specials[1:]})
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in specials}
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_target_positions=64,
        decoder_start_token_id=ids["<|startoftranscript|>"],
        eos_token_id=ids[eot],
        pad_token_id=ids[eot],
        bos_token_id=ids[eot],
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    with torch.no_grad():  # a random model otherwise emits only timestamp tokens, which decode to ""
        model.model.decoder.embed_tokens.weight[ids["<|notimestamps|>"] + 1 :] = 0
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"],
        eos_token_id=ids[eot],
        pad_token_id=ids[eot],
        no_timestamps_token_id=ids["<|notimestamps|>"],
        is_multilingual=False,
        max_length=16,
    )
    model.save_pretrained(out_dir)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tokenizer).save_pretrained(out_dir)
