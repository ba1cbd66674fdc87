"""Write a causal LM as a GGUF file for llama.cpp and Ollama, as llama.cpp's convert_hf_to_gguf.py writes
it (its TextModel, LlamaModel and _set_vocab_gpt2, followed step by step), with llama.cpp's own
building blocks from the `gguf` package: GGUFWriter, the tensor names of each architecture
(get_tensor_name_map), SpecialVocab (special tokens, merges, chat template) and gguf.quants.

The weights come from the fp32 model in memory (adapters merged), not from the saved folder, so a
bf16 or adapter export still gets a GGUF rounded once from the trained weights.
"""

from __future__ import annotations

import tempfile
from hashlib import sha256
from pathlib import Path

from adaptctl.core.errors import UserError
from adaptctl.export.gguf_support import WRITTEN, architecture_problem, llama_cpp_tables

FILE_TYPES = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "bf16": "MOSTLY_BF16", "q8_0": "MOSTLY_Q8_0"}
TENSOR_TYPES = {"f32": "F32", "f16": "F16", "bf16": "BF16", "q8_0": "Q8_0"}
# The rope scalings llama.cpp reads for Llama (llama3: the rope_freqs tensor; linear: a factor).
ROPE_TYPES = ("default", "linear", "llama3")


def file_name(kind: str) -> str:
    return f"model-{kind}.gguf"


def check_convertible(config: dict, tokenizer, where: str = "export.formats") -> str:
    """Before anything is written: the architecture, the rope scaling and the tokenizer's pre-tokenizer
    must be ones llama.cpp reads as they were trained.  Returns llama.cpp's pre-tokenizer name; `where`:
    the recipe field the errors are said of."""
    problem = architecture_problem(config.get("architectures") or [])
    if problem:
        raise UserError(f"{where}: gguf: {problem[0]}", hint=problem[1])
    rope = _rope_parameters(config)
    if rope.get("rope_type", "default") not in ROPE_TYPES:
        raise UserError(f"{where}: gguf: the model's rope scaling {rope.get('rope_type')!r} is not one "
                        f"adaptctl writes ({', '.join(ROPE_TYPES)})", hint="remove gguf from export.formats, or "
                        "convert export/model with llama.cpp's convert_hf_to_gguf.py")
    return pre_tokenizer(tokenizer, where)


def pre_tokenizer(tokenizer, where: str = "export.formats") -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer (how text is split before BPE), found as its
    converter finds it: the tokens of one test text, hashed.  An unknown one is refused, not guessed:
    llama.cpp would split text differently from training."""
    if not getattr(tokenizer, "is_fast", False) or _tokenizer_model(tokenizer) != "BPE" or _byte_fallback(tokenizer):
        raise UserError(f"{where}: gguf: adaptctl writes GGUF for byte-level BPE tokenizers (GPT-2 style: "
                        "SmolLM, Llama 3, Qwen); this model's tokenizer is another kind (SentencePiece)",
                        hint="convert export/model with llama.cpp's convert_hf_to_gguf.py, or remove gguf from "
                             "export.formats")
    tables = llama_cpp_tables()
    fingerprint = sha256(str(tokenizer.encode(tables["chktxt"])).encode()).hexdigest()
    name = tables["pre_tokenizers"].get(fingerprint)
    if name is None:
        raise UserError(f"{where}: gguf: llama.cpp does not know this tokenizer's pre-tokenizer (its "
                        f"fingerprint {fingerprint[:16]}… is not among the {len(tables['pre_tokenizers'])} its "
                        "converter knows), so it would split text differently from training",
                        hint="remove gguf from export.formats, or use a base model whose tokenizer llama.cpp knows")
    return name


def _tokenizer_model(tokenizer) -> str:
    import json

    return json.loads(tokenizer.backend_tokenizer.to_str()).get("model", {}).get("type", "")


def _byte_fallback(tokenizer) -> bool:
    import json

    return bool(json.loads(tokenizer.backend_tokenizer.to_str()).get("model", {}).get("byte_fallback"))


def write_gguf(model, tokenizer, path: Path, kind: str, name: str, pre: str) -> None:
    """The model (fp32, merged) and its tokenizer (with the chat template to ship) as one GGUF file."""
    import gguf

    config = model.config.to_dict()
    arch = _model_arch(config)
    writer = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[arch])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    _add_parameters(writer, config, getattr(gguf.LlamaFileType, FILE_TYPES[kind]))
    _add_vocabulary(writer, config, tokenizer, pre)
    _add_tensors(writer, model, config, arch, kind)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.write_header_to_file(path=path)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    path.chmod(0o644)


def _model_arch(config: dict):
    import gguf

    wanted = next(WRITTEN[a] for a in config["architectures"] if a in WRITTEN)
    return next(arch for arch, arch_name in gguf.MODEL_ARCH_NAMES.items() if arch_name == wanted)


def _rope_parameters(config: dict) -> dict:
    """transformers 5 keeps rope_theta and the scaling in rope_parameters; older configs in rope_scaling."""
    rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    if "rope_theta" not in rope and config.get("rope_theta") is not None:
        rope["rope_theta"] = config["rope_theta"]
    if "rope_type" not in rope and rope.get("type"):
        rope["rope_type"] = rope["type"]
    return rope


def _head_dim(config: dict) -> int:
    return config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]


def _add_parameters(writer, config: dict, file_type):
    """TextModel.set_gguf_parameters and LlamaModel's additions, for the keys a Llama config has."""
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config.get("num_key_value_heads") or config["num_attention_heads"])
    rope = _rope_parameters(config)
    if rope.get("rope_type") == "linear":
        import gguf

        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])
    if rope.get("rope_theta") is not None:
        writer.add_rope_freq_base(rope["rope_theta"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    if config.get("head_dim") is not None:
        writer.add_key_length(config["head_dim"])
        writer.add_value_length(config["head_dim"])
    writer.add_file_type(file_type)
    writer.add_vocab_size(config["vocab_size"])
    writer.add_rope_dimension_count(_head_dim(config))


def _add_vocabulary(writer, config: dict, tokenizer, pre: str):
    """_set_vocab_gpt2: every id's token and type, the pre-tokenizer, then SpecialVocab (merges, special
    token ids, whether BOS/EOS are added, the chat template) read from the tokenizer's saved files."""
    import gguf

    tokens, types = _tokens(tokenizer, config["vocab_size"])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer.save_pretrained(scratch)
        (Path(scratch) / "config.json").write_text(_json(config))
        special = gguf.SpecialVocab(scratch, load_merges=True, n_vocab=config["vocab_size"])
    # What the tokenizer does, not what its files say it might: llama.cpp adds BOS by default for BPE
    # vocabularies, and its converter sets it by a vocabulary-size rule; training added it or not.
    special.add_special_token.update(_added_tokens(tokenizer))
    special.add_to_gguf(writer, quiet=True)


def _json(config: dict) -> str:
    import json

    return json.dumps(config, default=str)


def _added_tokens(tokenizer) -> dict:
    probe = tokenizer("x", add_special_tokens=True)["input_ids"]
    bare = tokenizer("x", add_special_tokens=False)["input_ids"]
    return {"bos": tokenizer.bos_token_id is not None and len(probe) > len(bare) and probe[0] == tokenizer.bos_token_id,
            "eos": tokenizer.eos_token_id is not None and len(probe) > len(bare) and probe[-1] == tokenizer.eos_token_id}


def _tokens(tokenizer, vocab_size: int) -> tuple[list[str], list[int]]:
    """get_vocab_base: the token text of every id below vocab_size; added tokens pre-normalized, special
    ones (or ones that look it) CONTROL, other added ones USER_DEFINED; ids without a token are padding."""
    import gguf

    reverse = {i: token for token, i in tokenizer.get_vocab().items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        token = reverse.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        if token in added:
            if not decoder[i].normalized:
                token = tokenizer.decode(tokenizer.encode(token, add_special_tokens=False))
            special = decoder[i].special or _looks_special(token)
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
            if not special:
                token = token.replace("\u2581", " ")
        else:
            types.append(gguf.TokenType.NORMAL)
        tokens.append(token)
    return tokens, types


def _looks_special(token: str) -> bool:
    """does_token_look_special: tokens some models leave unmarked though they are control tokens."""
    return (token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]") or (token.startswith("<|") and token.endswith("|>"))
            or (token.startswith("<｜") and token.endswith("｜>")) or (token.startswith("<unused") and token.endswith(">")))


def _add_tensors(writer, model, config: dict, arch, kind: str):
    """prepare_tensors: each weight under its llama.cpp name (the architecture's TensorNameMap), q/k permuted
    for Llama, 1-D tensors and norms in F32, the rest in the file's type (Q8_0 falls back to F16 for rows
    that are not whole blocks, as the converter does)."""
    import gguf
    import torch

    names = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    tied = config.get("tie_word_embeddings", False)
    for hf_name, tensor in _extra_tensors(config) + list(model.state_dict().items()):
        if tied and hf_name == "lm_head.weight":
            continue  # the saved checkpoint has none: llama.cpp reads the output from token_embd
        data = tensor.detach().to(torch.float32).cpu()
        if arch == gguf.MODEL_ARCH.LLAMA and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            data = _permute(data, heads, heads)
        elif arch == gguf.MODEL_ARCH.LLAMA and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            data = _permute(data, heads, kv_heads)
        name = hf_name if hf_name.startswith("rope_freqs") else names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise UserError(f"export.formats: gguf: llama.cpp has no name for the tensor {hf_name}",
                            hint="remove gguf from export.formats")
        array, qtype = _quantized(data.numpy(), name, kind)
        writer.add_tensor(name, array, raw_dtype=qtype)


def _quantized(array, name: str, kind: str):
    import gguf

    qtype = gguf.GGMLQuantizationType.F32 if array.ndim <= 1 or name.endswith("_norm.weight") else \
        getattr(gguf.GGMLQuantizationType, TENSOR_TYPES[kind])
    try:
        return gguf.quants.quantize(array, qtype), qtype
    except gguf.QuantError:
        return gguf.quants.quantize(array, gguf.GGMLQuantizationType.F16), gguf.GGMLQuantizationType.F16


def _permute(weights, n_head: int, n_head_kv: int):
    """LlamaModel.permute: Hugging Face's rotary layout (halves) back to the original interleaved pairs."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _extra_tensors(config: dict) -> list:
    """LlamaModel.generate_extra_tensors: llama3 rope scaling as per-frequency factors (rope_freqs)."""
    import math

    import torch

    rope = _rope_parameters(config)
    if rope.get("rope_type") != "llama3":
        return []
    dim = _head_dim(config)
    freqs = 1.0 / (rope.get("rope_theta", 10000.0) ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor, low, high = rope.get("factor", 8.0), rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old_context = rope.get("original_max_position_embeddings", 8192)
    factors = []
    for freq in freqs.tolist():
        wavelength = 2 * math.pi / freq
        if wavelength < old_context / high:
            factors.append(1.0)
        elif wavelength > old_context / low:
            factors.append(factor)
        else:
            smooth = (old_context / wavelength - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return [("rope_freqs.weight", torch.tensor(factors, dtype=torch.float32))]
