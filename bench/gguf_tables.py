"""Regenerate adaptctl/export/llama_cpp_tables.json from a llama.cpp source tree:

    python bench/gguf_tables.py LLAMA_CPP_DIR

Two facts of llama.cpp's converter that the `gguf` package does not carry: the BPE pre-tokenizer
fingerprints of convert_hf_to_gguf's get_vocab_base_pre (generated there by
convert_hf_to_gguf_update.py; the hash of one test text's tokens names the pre-tokenizer that
llama.cpp must apply) and the Hugging Face architectures it converts (conversion/__init__.py's
TEXT_MODEL_MAP).  Read from the source text, never typed by hand.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "adaptctl" / "export" / "llama_cpp_tables.json"


def _function_source(tree_root: Path) -> str:
    for candidate in (tree_root / "conversion" / "base.py", tree_root / "convert_hf_to_gguf.py"):
        if candidate.is_file() and "def get_vocab_base_pre" in candidate.read_text():
            return candidate.read_text()
    raise SystemExit(f"no get_vocab_base_pre under {tree_root}")


def tables(root: Path) -> dict:
    source = _function_source(root)
    body = source.split("def get_vocab_base_pre", 1)[1].split("# Marker: End get_vocab_base_pre", 1)[0]
    chktxt = ast.literal_eval(re.search(r"chktxt = ('.*')\n", body).group(1))
    pairs = re.findall(r'if chkhsh == "([0-9a-f]{64})":\n(?:\s*#.*\n)*\s*res = "([^"]+)"', body)
    models = ast.literal_eval(re.search(r"TEXT_MODEL_MAP: dict\[str, str\] = (\{.*?\n\})", (root / "conversion" / "__init__.py")
                                        .read_text(), re.DOTALL).group(1))
    commit = subprocess.run(["git", "-C", str(root), "log", "-1", "--format=%H"], capture_output=True, text=True,
                            check=False).stdout.strip()  # a tree without git: the commit is unknown
    return {"source": f"llama.cpp {commit or '(commit unknown)'}: conversion/base.py get_vocab_base_pre, "
                      "conversion/__init__.py TEXT_MODEL_MAP",
            "chktxt": chktxt, "pre_tokenizers": dict(pairs), "converted_architectures": sorted(models)}


if __name__ == "__main__":
    found = tables(Path(sys.argv[1]))
    OUT.write_text(json.dumps(found, indent=1, ensure_ascii=False) + "\n")
    print(f"{OUT}: {len(found['pre_tokenizers'])} pre-tokenizer fingerprints, "
          f"{len(found['converted_architectures'])} architectures")
