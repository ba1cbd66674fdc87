"""Which models `export.formats: [gguf]` can write, known before anything loads: validate, prepare and
export ask here, from the base model's config.json (or a GGUF base's own header), never its weights.

adaptctl writes GGUF for the architectures below, each converted as llama.cpp's convert_hf_to_gguf.py
converts it (adaptctl/export/gguf_file.py).  llama.cpp's converter handles many more (its list is in
llama_cpp_tables.json, generated from its source): a model of one of those is told to run that script
on the exported folder; one of none is told llama.cpp cannot read it at all.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

# Hugging Face architecture -> llama.cpp's architecture name (gguf.MODEL_ARCH_NAMES).  "llama" is the
# one llama.cpp's LlamaModel writes; its q/k projections are permuted back from Hugging Face's rotary
# layout (gguf_file.py), as transformers permutes them again when it reads the file.
WRITTEN = {"LlamaForCausalLM": "llama"}
TABLES = Path(__file__).with_name("llama_cpp_tables.json")


@lru_cache(maxsize=1)
def llama_cpp_tables() -> dict:
    """chktxt, pre_tokenizers {fingerprint: name} and converted_architectures, as llama.cpp's source has them."""
    return json.loads(TABLES.read_text())


def architecture_problem(architectures: list[str]) -> tuple[str, str] | None:
    """Why a model of these architectures gets no GGUF, and a hint (None: it gets one)."""
    if any(name in WRITTEN for name in architectures):
        return None
    named = ", ".join(architectures) or "an unnamed architecture (config.json has no `architectures`)"
    written = ", ".join(WRITTEN)
    if any(name in llama_cpp_tables()["converted_architectures"] for name in architectures):
        return ((f"the base model is {named}, which adaptctl does not write as GGUF (it writes {written}); "
                "llama.cpp's own converter does: run `python convert_hf_to_gguf.py export/model` from a "
                "llama.cpp checkout after the export"), "remove gguf from export.formats")
    return ((f"the base model is {named}, which llama.cpp cannot read (its converter knows no such "
            f"architecture; adaptctl writes GGUF for {written})"), "remove gguf from export.formats")


def base_architectures(config: dict) -> list[str]:
    """The architectures a base model's config names; a GGUF base's (`gguf_architecture`, from its header)
    mapped back to the Hugging Face names adaptctl writes for it."""
    if "gguf_architecture" in config:
        return [hf for hf, arch in WRITTEN.items() if arch == config["gguf_architecture"]] or \
            [f"GGUF architecture {config['gguf_architecture']!r}"]
    names = config.get("architectures") or []
    return [str(name) for name in names] if isinstance(names, list) else []


def export_problems(recipe, recipe_dir: Path | None = None) -> list[tuple[tuple, str, str]]:
    """validate: the (field, message, hint) problems of export.formats: gguf for this recipe's base model;
    none when gguf is not asked for or the base model's config cannot be read cheaply (prepare and
    export check the resolved model again)."""
    if "gguf" not in recipe.export.formats:
        return []
    from adaptctl.models.resolve import peek_config

    problem = config_problem(recipe, peek_config(recipe.model.base, base_dir=recipe_dir))
    return [(("export", "formats"), *problem)] if problem else []


def config_problem(recipe, config: dict | None) -> tuple[str, str] | None:
    """(message, hint) when the recipe asks for GGUF and the model of this config cannot have it; the message
    is said of the field export.formats."""
    if "gguf" not in recipe.export.formats or not config:
        return None
    problem = architecture_problem(base_architectures(config))
    return (f"gguf: {problem[0]}", problem[1]) if problem else None
