"""A pretrained encoder-decoder made from two models (`model.base` + `model.decoder`): transformers'
EncoderDecoderModel warm-started from an encoder and a decoder checkpoint, as BERT2BERT (Rothe et al.
2020, "Leveraging Pre-trained Checkpoints for Sequence Generation Tasks"): both stacks keep their
pretrained weights, the decoder becomes causal and gains cross-attention, which starts random.

The composed model is saved once as a plain model folder under ADAPTCTL_CACHE, keyed by both folders'
contents (like a GGUF conversion), so that every later stage, export, `adaptctl predict` and
`adaptctl serve` load it as any seq2seq checkpoint: AutoModelForSeq2SeqLM maps its config
(`model_type: encoder-decoder`) to EncoderDecoderModel, no code of its own, safetensors weights.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from adaptctl.core.errors import UserError
from adaptctl.core.rundir import cached_model_folder, file_hash

# Bumped when what compose writes changes, so that an older cached folder is not reused.
COMPOSE_VERSION = 2


def composed_folder(encoder: Path, decoder: Path, options: dict) -> Path:
    """The cached EncoderDecoderModel folder for this encoder and decoder, built on the first call.
    options: the from_pretrained safety options (loading.load_options: no remote code, safetensors only)."""
    return cached_model_folder(f"encoder-decoder-{_key(encoder, decoder)}",
                               lambda tmp: _write_composed(encoder, decoder, options, tmp))


def _key(encoder: Path, decoder: Path) -> str:
    digest = hashlib.sha256(f"v{COMPOSE_VERSION}".encode())
    for folder in (encoder, decoder):
        digest.update(file_hash(folder).encode())  # both folders whole: ~0.1 s each for MiniLM's 90 MB
    return digest.hexdigest()[:16]


def _write_composed(encoder_path: Path, decoder_path: Path, options: dict, out: Path) -> None:
    from transformers import (
        AutoModel,
        AutoModelForCausalLM,
        AutoTokenizer,
        EncoderDecoderModel,
    )

    trusted = options.get("trust_remote_code", False)
    tokenizer = AutoTokenizer.from_pretrained(str(encoder_path), trust_remote_code=trusted)
    _check_same_vocabulary(tokenizer, AutoTokenizer.from_pretrained(str(decoder_path), trust_remote_code=trusted),
                           decoder_path)
    encoder = AutoModel.from_pretrained(str(encoder_path), **options)
    if getattr(encoder.config, "is_encoder_decoder", False):
        raise UserError(f"model.base: {encoder_path} is an encoder-decoder already ({encoder.config.model_type})",
                        hint="remove model.decoder: it warm-starts an encoder-decoder from an encoder such as BERT")
    try:  # the decoder stack made causal, with cross-attention over the encoder's output (new weights)
        decoder = AutoModelForCausalLM.from_pretrained(str(decoder_path), is_decoder=True, add_cross_attention=True,
                                                       **options)
        model = EncoderDecoderModel(encoder=encoder, decoder=decoder)
    except ValueError as exc:  # no causal-LM class for the type, or a decoder without cross-attention (Llama)
        raise UserError(f"model.decoder: {decoder_path} cannot be the decoder of an encoder-decoder model: {exc}",
                        hint="use a model whose transformers class takes cross-attention (BERT, RoBERTa, GPT-2), "
                             "e.g. the same model as model.base") from None
    _set_special_tokens(model, tokenizer)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))


def _check_same_vocabulary(encoder_tokenizer, decoder_tokenizer, decoder_path: Path):
    """Source and target are tokenized with one tokenizer (the encoder's): the decoder must share it."""
    if encoder_tokenizer.get_vocab() != decoder_tokenizer.get_vocab():
        raise UserError(f"model.decoder: the tokenizer of {decoder_path} differs from model.base's",
                        hint="adaptctl tokenizes sources and targets with model.base's tokenizer; warm-start the "
                             "decoder from a model with the same vocabulary (e.g. the same model, as BERT2BERT does)")


def _set_special_tokens(model, tokenizer):
    """What generation and the loss's shifted labels need, which EncoderDecoderModel leaves unset: the
    decoder starts from the tokenizer's BOS (BERT: [CLS]) and stops at its EOS (BERT: [SEP]), as in
    Rothe et al. and the transformers BERT2BERT examples.  The tokenizer is told the same, so that
    predict and serve, which read only the saved folder, stop where training taught the model to."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if start is None or end is None or tokenizer.pad_token_id is None:
        raise UserError("model.base: its tokenizer has no start (BOS or CLS), end (EOS or SEP) or padding "
                        "token, which an encoder-decoder's decoder starts, stops and pads with",
                        hint="use an encoder whose tokenizer has them, such as BERT's")
    if tokenizer.bos_token is None:
        tokenizer.bos_token = tokenizer.convert_ids_to_tokens(start)
    if tokenizer.eos_token is None:
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(end)
    for config in (model.config, model.generation_config):
        config.decoder_start_token_id = start
    # the decoder's own config too: the Trainer reads the tokens from it (get_text_config) and would "align" them
    for config in (model.config, model.config.decoder, model.generation_config):
        config.bos_token_id, config.eos_token_id, config.pad_token_id = start, end, tokenizer.pad_token_id
