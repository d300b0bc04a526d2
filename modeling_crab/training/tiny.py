"""Tiny random Crab models and tokenizers, built offline, for the demo and the tests.

Nothing here downloads: the tokenizer is a byte-level BPE trained on the spot with `tokenizers`, and the encoders are
random WavLM / RoBERTa stacks a few hundred kilobytes in size.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from tokenizers import ByteLevelBPETokenizer
from transformers import RobertaConfig, RobertaTokenizerFast, WavLMConfig

from ..configuration_crab import CrabConfig
from ..options import MAX_TEXT_TOKENS

# Special tokens in RoBERTa's id order: <s>=0, <pad>=1, </s>=2, <unk>=3, <mask>=4 (matches RobertaConfig defaults).
ROBERTA_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]

# A few hundred common words so that a tokenizer trained on a handful of sentences still covers everyday text.
BASIC_ENGLISH_WORDS = """
a about after again all also always am an and angry any are around as at away back bad be because been before being
best better big but by call can come could day did do does done don't down each even every feel feeling felt find
fine for from get give go going good great had happy has hate have he hear her here him his home how i i'm if in is
it it's just keep know last leave let like little long look love made make man many may me mean more most much must
my need never new nice no not nothing now of off oh okay old on one only or other our out over people please really
right sad said same say see she should so some something sorry still stop sure take tell than thank thanks that the
their them then there these they thing think this time to today told too tomorrow up us very wait want was way we
well went were what when where which who why will with won't work world would yeah yes yesterday you your
""".split()


def build_tiny_tokenizer(texts: Iterable[str] = (), vocab_size: int = 1000) -> RobertaTokenizerFast:
    """Train a byte-level BPE on `texts` plus a small English word list and wrap it as a `RobertaTokenizerFast`.

    Merges go in as (left, right) tuples: the tokenizers backend rejects "left right" strings here.
    """
    corpus = [str(text) for text in texts] + [" ".join(BASIC_ENGLISH_WORDS)] + BASIC_ENGLISH_WORDS
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        corpus, vocab_size=vocab_size, min_frequency=1, special_tokens=ROBERTA_SPECIAL_TOKENS, show_progress=False
    )
    vocab = bpe.get_vocab()
    merges = [tuple(pair.split(" ")) if isinstance(pair, str) else tuple(pair) for pair in _bpe_merges(bpe)]
    return RobertaTokenizerFast(vocab=vocab, merges=merges, model_max_length=MAX_TEXT_TOKENS)


def _bpe_merges(bpe: ByteLevelBPETokenizer) -> list:
    """Merges of a trained BPE model, read from its JSON serialisation (the Python API exposes no getter)."""
    return json.loads(bpe._tokenizer.to_str())["model"]["merges"]


def tiny_crab_config(
    num_labels: int, id2label: dict[int, str] | None = None, vocab_size: int = 1000, **config_kwargs
) -> CrabConfig:
    """A CrabConfig with a 2-layer, 64-wide random WavLM and RoBERTa and a 64-wide head (CPU-trainable in minutes).

    `config_kwargs` set further `CrabConfig` fields (`mask_padding`, `mlcs_taps`, ...).
    """
    id2label = id2label or {i: f"LABEL_{i}" for i in range(num_labels)}
    id2label = {int(i): str(label) for i, label in id2label.items()}
    if len(id2label) != num_labels:
        raise ValueError(f"id2label has {len(id2label)} entries but num_labels={num_labels}; pass one name per class.")
    audio_config = WavLMConfig(
        conv_dim=(32, 32, 32, 32),  # total stride 640: 40 ms frames (the real WavLM: 20 ms), a short GRU on CPU
        conv_kernel=(10, 8, 4, 4),
        conv_stride=(5, 8, 4, 4),
        # As WavLM-large's: each CNN layer's output is layer-normed over its channels frame by frame, and without a
        # bias that norm would make the encoder blind to loudness (scaling a frame scales its conv output).
        conv_bias=True,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        layerdrop=0.0,
    )
    text_config = RobertaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=160,
    )
    return CrabConfig(
        audio_config=audio_config,
        text_config=text_config,
        fusion_hidden_size=64,
        contrastive_dim=32,
        id2label=id2label,
        label2id={label: i for i, label in id2label.items()},
        **{"audio_encoder_name": None, "text_encoder_name": None, **config_kwargs},  # random, not pretrained
    )
