#!/usr/bin/env python3
"""Makes the model-parity fixtures of tests/fixtures/models/.

1. Three tiny random checkpoints, each a Hugging Face folder (config.json +
   model.safetensors) with the logits `transformers` computes for a fixed token sequence:
     llama_tied         LlamaForCausalLM, tied LM head
     llama3_rope        LlamaForCausalLM, llama3 RoPE scaling, separate LM head
     qwen2_bias         Qwen2ForCausalLM, q/k/v biases, separate LM head
2. With --default-model: reference next-token logits of the default model (the Q4_1 GGUF,
   dequantized by transformers' own GGUF loader to fp32) for a fixed ChatML prompt, and
   transformers' greedy continuations of three prompts with each step's top-1/top-2 logit
   margin.

Runs wherever torch, transformers and gguf are installed (none of them is needed to build
or test draftwise):
  python3 tools/make_model_fixtures.py --out tests/fixtures/models \
      [--default-model models/SmolLM2-135M-Instruct.Q4_1.gguf]
"""
import argparse
import json
import os
import sys

import torch
import transformers
from safetensors.torch import save_file

SEQUENCE_LENGTH = 40

COMMON = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    hidden_act="silu",
    bos_token_id=1,
    eos_token_id=2,
)

TINY_MODELS = {
    "llama_tied": (
        transformers.LlamaConfig,
        transformers.LlamaForCausalLM,
        dict(tie_word_embeddings=True, rope_theta=10000.0),
    ),
    "llama3_rope": (
        transformers.LlamaConfig,
        transformers.LlamaForCausalLM,
        # Wavelengths 2*pi*10000^(i/8) span all three llama3 regimes for these factors:
        # 6.3 (< 16, kept), 19.9 and 62.8 (smoothed), 199 and up (> 64, divided by 8).
        dict(
            tie_word_embeddings=False,
            rope_theta=10000.0,
            rope_scaling=dict(
                rope_type="llama3",
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=64,
            ),
        ),
    ),
    "qwen2_bias": (
        transformers.Qwen2Config,
        transformers.Qwen2ForCausalLM,
        dict(tie_word_embeddings=False, rope_theta=1000000.0, use_sliding_window=False),
    ),
}

# Prompts of the default model's fixture; the first also gives the reference logits.
DEFAULT_MODEL_PROMPTS = [
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Explain why the sky is blue in two sentences.",
]
GREEDY_TOKENS = 48


def randomize(model, generator):
    """Draws every parameter afresh: norms near 1, everything else N(0, 0.2^2), so that
    biases (zero after transformers' init) and RoPE errors move the logits visibly."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float32)
            if name.endswith("norm.weight"):
                parameter.copy_(1.0 + 0.1 * noise)
            else:
                parameter.copy_(0.2 * noise)


def versions():
    return {"torch": torch.__version__, "transformers": transformers.__version__}


def make_tiny(out_dir, name, seed):
    config_class, model_class, extra = TINY_MODELS[name]
    config = config_class(**COMMON, **extra)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = model_class(config).to(torch.float32).eval()
    generator = torch.Generator().manual_seed(seed)
    randomize(model, generator)
    if config.tie_word_embeddings:
        model.tie_weights()
    input_ids = torch.randint(0, COMMON["vocab_size"], (1, SEQUENCE_LENGTH), generator=generator)
    with torch.no_grad():
        logits = model(input_ids).logits[0].to(torch.float32).contiguous()
    folder = os.path.join(out_dir, name)
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    save_file({"logits": logits}, os.path.join(folder, "reference_logits.safetensors"))
    with open(os.path.join(folder, "reference.json"), "w") as f:
        json.dump(
            {
                "input_ids": input_ids[0].tolist(),
                "logits": "reference_logits.safetensors: logits [sequence, vocab] fp32",
                "generated_by": "tools/make_model_fixtures.py",
                "versions": versions(),
            },
            f,
            indent=1,
        )
    print(f"{name}: max |logit| {logits.abs().max().item():.4f}")


def make_default(out_dir, gguf_path):
    folder, file_name = os.path.split(os.path.abspath(gguf_path))
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=file_name)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=file_name, torch_dtype=torch.float32, attn_implementation="eager"
    ).eval()
    results = []
    for index, prompt in enumerate(DEFAULT_MODEL_PROMPTS):
        messages = [{"role": "user", "content": prompt}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        input_ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        if isinstance(input_ids, dict) or hasattr(input_ids, "input_ids"):
            input_ids = input_ids["input_ids"]
        ids = torch.tensor([list(input_ids)])
        with torch.no_grad():
            if index == 0:
                logits = model(ids).logits[0, -1].to(torch.float32).contiguous()
                save_file({"logits": logits}, os.path.join(out_dir, "default_model_logits.safetensors"))
            generated = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=GREEDY_TOKENS,
                output_scores=True,
                return_dict_in_generate=True,
                pad_token_id=tokenizer.eos_token_id,
            )
        tokens = generated.sequences[0, ids.shape[1]:].tolist()
        margins = []
        for step in generated.scores:
            top = torch.topk(step[0].to(torch.float32), 2).values
            margins.append(float(top[0] - top[1]))
        results.append(
            {"prompt": prompt, "text": text, "input_ids": ids[0].tolist(), "greedy_tokens": tokens,
             "greedy_top2_margins": margins}
        )
    with open(os.path.join(out_dir, "default_model.json"), "w") as f:
        json.dump(
            {
                "model": file_name,
                "logits": "default_model_logits.safetensors: next-token logits [vocab] fp32 of prompts[0]",
                "greedy": "greedy_tokens: transformers' greedy continuation, up to 48 tokens or EOS",
                "generated_by": "tools/make_model_fixtures.py",
                "versions": versions(),
                "prompts": results,
            },
            f,
            indent=1,
        )
    print(f"default model: max |logit| {logits.abs().max().item():.4f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--default-model")
    parser.add_argument("--skip-tiny", action="store_true")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if not args.skip_tiny:
        for seed, name in enumerate(TINY_MODELS, start=1):
            make_tiny(args.out, name, seed)
    if args.default_model:
        make_default(args.out, args.default_model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
