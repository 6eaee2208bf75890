#!/usr/bin/env python3
"""TTT fixtures for the options the official fixtures do not cover (tests/fixtures/ttt/).

An implementation of ../shared/docs/TTT.md in PyTorch, written from the document, in float64,
primal form, with the inner gradients taken by autograd (so it also checks the C++ reference's
hand-written LayerNorm-then-L2 backward). It is first checked against the two official
fixtures (tests/fixtures/ttt_official/, made with ttt-lm-pytorch): logits and greedy ids must
match. Then it writes tiny random checkpoints for the other options (use_gate, share_qk with
its convolutions, pre_conv, untied head, mini-batch sizes that the prompt length is not a
multiple of), each with the logits and greedy continuation it computes.

    python3 tools/make_ttt_fixtures.py [--out tests/fixtures/ttt]

Needs torch and safetensors (pip install -r tools/requirements-fixtures.txt).
"""
import argparse
import json
import math
import os
import sys

import torch
from safetensors.torch import load_file, save_file

torch.set_default_dtype(torch.float64)
EPS_INNER = 1e-6
DEFAULTS = dict(vocab_size=32000, hidden_size=2048, intermediate_size=5504, num_hidden_layers=24,
                num_attention_heads=32, rms_norm_eps=1e-6, tie_word_embeddings=True, rope_theta=10000.0,
                ttt_layer_type="linear", ttt_base_lr=1.0, mini_batch_size=16, use_gate=False, share_qk=False,
                pre_conv=False, conv_kernel=4)


def rms_norm(x, weight, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * weight


def layer_norm(x, gain, bias):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + EPS_INNER) * gain + bias


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def causal_conv(x, weight, bias):
    """Depthwise causal convolution over time: x [T, C], weight [C, 1, k], bias [C]."""
    k = weight.shape[-1]
    padded = torch.cat([torch.zeros(k - 1, x.shape[1]), x], 0)
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        out[t] = (padded[t:t + k].T * weight[:, 0, :]).sum(-1)
    return out + bias


def rope_interleaved(v, positions, theta):
    """v [T, f]: pairs (2j, 2j+1) rotated by position · theta^(-2j/f)."""
    f = v.shape[-1]
    j = torch.arange(f // 2, dtype=torch.float64)
    angle = positions[:, None].double() * theta ** (-2.0 * j / f)
    a, b = v[:, 0::2], v[:, 1::2]
    out = torch.empty_like(v)
    out[:, 0::2] = a * torch.cos(angle) - b * torch.sin(angle)
    out[:, 1::2] = a * torch.sin(angle) + b * torch.cos(angle)
    return out


def rope_half_split(v, positions, theta):
    """v [T, f]: Hugging Face Llama's rotate_half pairing (j, j + f/2), angle position · theta^(-2j/f)."""
    f = v.shape[-1]
    angle = positions[:, None].double() * theta ** (-torch.arange(0, f, 2, dtype=torch.float64) / f)
    cos, sin = torch.cos(angle).repeat(1, 2), torch.sin(angle).repeat(1, 2)
    rotated = torch.cat([-v[:, f // 2:], v[:, :f // 2]], -1)
    return v * cos + rotated * sin


def attention_layer(x, p, cfg):
    """An attention layer of a hybrid model (a Llama decoder layer's self_attn): x [T, C] already normed."""
    T, C = x.shape
    nh = cfg["num_attention_heads"]
    kvh = cfg.get("num_key_value_heads") or nh
    f = C // nh
    q, k, v = x @ p["q_proj.weight"].T, x @ p["k_proj.weight"].T, x @ p["v_proj.weight"].T
    positions = torch.arange(T)
    causal = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
    out = torch.zeros(T, C)
    for h in range(nh):
        g = h // (nh // kvh)
        qh = rope_half_split(q[:, h * f:(h + 1) * f], positions, cfg["rope_theta"])
        kh = rope_half_split(k[:, g * f:(g + 1) * f], positions, cfg["rope_theta"])
        scores = (qh @ kh.T / math.sqrt(f)).masked_fill(causal, float("-inf"))
        out[:, h * f:(h + 1) * f] = torch.softmax(scores, -1) @ v[:, g * f:(g + 1) * f]
    return out @ p["o_proj.weight"].T


def layer_types(cfg):
    return cfg.get("layer_types") or ["ttt"] * cfg["num_hidden_layers"]


def inner_model(z, params, mlp):
    if mlp:
        w1, b1, w2, b2 = params
        return gelu_tanh(z @ w1 + b1) @ w2 + b2
    w1, b1 = params
    return z @ w1 + b1


def ttt_layer(x, p, cfg):
    """x [T, C] already normed → [T, C] (TTT.md steps 1–9)."""
    T, C = x.shape
    nh = cfg["num_attention_heads"]
    f = C // nh
    b = cfg["mini_batch_size"]
    mlp = cfg["ttt_layer_type"] == "mlp"
    q = x @ p["q_proj.weight"].T
    if cfg["share_qk"]:
        k = causal_conv(q, p["conv_k.weight"], p["conv_k.bias"])
        q = causal_conv(q, p["conv_q.weight"], p["conv_q.bias"])
    else:
        k = x @ p["k_proj.weight"].T
    v = x @ p["v_proj.weight"].T
    positions = torch.arange(T) % b
    lr_weight = p["learnable_ttt_lr_weight"].reshape(nh, C)
    lr = cfg["ttt_base_lr"] * torch.sigmoid(x @ lr_weight.T + p["learnable_ttt_lr_bias"].reshape(nh)) / f  # [T, nh]
    tok = torch.clamp(1.0 / torch.arange(1, b + 1, dtype=torch.float64) + p["learnable_token_idx"], min=0.0)
    out = torch.zeros(T, C)
    for h in range(nh):
        qh = rope_interleaved(q[:, h * f:(h + 1) * f], positions, cfg["rope_theta"])
        kh = rope_interleaved(k[:, h * f:(h + 1) * f], positions, cfg["rope_theta"])
        vh = v[:, h * f:(h + 1) * f]
        gain, bias = p["ttt_norm_weight"][h], p["ttt_norm_bias"][h]
        inner = 4 * f if mlp else f
        w0 = [p["W1"][h].clone(), p["b1"][h].reshape(inner).clone()]
        if mlp:
            w0 += [p["W2"][h].clone(), p["b2"][h].reshape(f).clone()]
        for start in range(0, T, b):
            grad = [torch.zeros_like(w) for w in w0]
            current = None
            for i, t in enumerate(range(start, min(start + b, T))):
                params = [w.clone().requires_grad_(True) for w in w0]
                loss = 0.5 * ((layer_norm(inner_model(kh[t], params, mlp), gain, bias) - (vh[t] - kh[t])) ** 2).sum()
                grads = torch.autograd.grad(loss, params)
                grad = [g + lr[t, h] * d for g, d in zip(grad, grads)]
                current = [w - tok[i] * g for w, g in zip(w0, grad)]
                out[t, h * f:(h + 1) * f] = qh[t] + layer_norm(inner_model(qh[t], current, mlp), gain, bias)
            if min(start + b, T) - start == b:
                w0 = current  # a full mini-batch commits its weights
    out = layer_norm(out, p["post_norm.weight"], p["post_norm.bias"])
    if cfg["use_gate"]:
        out = out * gelu_tanh(x @ p["g_proj.weight"].T)
    return out @ p["o_proj.weight"].T


def forward(ids, weights, cfg):
    eps = cfg["rms_norm_eps"]
    x = weights["model.embed_tokens.weight"][torch.tensor(ids)]
    for i, kind in enumerate(layer_types(cfg)):
        pre = f"model.layers.{i}."
        if kind == "attention":
            p = {key[len(pre + "self_attn."):]: value for key, value in weights.items()
                 if key.startswith(pre + "self_attn.")}
            x = x + attention_layer(rms_norm(x, weights[pre + "seq_norm.weight"], eps), p, cfg)
        p = {key[len(pre + "seq_modeling_block."):]: value for key, value in weights.items()
             if key.startswith(pre + "seq_modeling_block.")}
        if kind == "attention":
            pass
        elif cfg["pre_conv"]:
            x = x + causal_conv(rms_norm(x, weights[pre + "conv.norm.weight"], eps), weights[pre + "conv.conv.weight"],
                                weights[pre + "conv.conv.bias"])
        if kind == "ttt":
            x = x + ttt_layer(rms_norm(x, weights[pre + "seq_norm.weight"], eps), p, cfg)
        n = rms_norm(x, weights[pre + "ffn_norm.weight"], eps)
        gate = n @ weights[pre + "mlp.gate_proj.weight"].T
        x = x + (gate * torch.sigmoid(gate) * (n @ weights[pre + "mlp.up_proj.weight"].T)) @ \
            weights[pre + "mlp.down_proj.weight"].T
    x = rms_norm(x, weights["model.norm.weight"], eps)
    head = weights["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else weights["lm_head.weight"]
    return x @ head.T


def greedy(ids, weights, cfg, steps):
    """Greedy continuation recomputing the whole sequence each step; the smallest top-1/top-2 margin."""
    ids = list(ids)
    out, margin = [], float("inf")
    for _ in range(steps):
        last = forward(ids, weights, cfg)[-1]
        top = torch.topk(last, 2).values
        margin = min(margin, float(top[0] - top[1]))
        ids.append(int(last.argmax()))
        out.append(ids[-1])
    return out, margin


def load_folder(folder):
    cfg = dict(DEFAULTS)
    cfg.update(json.load(open(os.path.join(folder, "config.json"))))
    weights = {key: value.double() for key, value in load_file(os.path.join(folder, "model.safetensors")).items()}
    return cfg, weights


def read_ids(path):
    return [int(v) for v in open(path).read().strip().split(",")]


def check_official(folder):
    cfg, weights = load_folder(folder)
    ids = read_ids(os.path.join(folder, "input_ids.txt"))
    ref = json.load(open(os.path.join(folder, "reference.json")))
    logits = forward(ids, weights, cfg)
    worst = 0.0
    for row, want in zip([8, 16, 36], ref["logits_rows_8_16_36"]):
        want = torch.tensor(want)
        worst = max(worst, float((logits[row] - want).abs().max() / want.abs().max()))
    want = torch.tensor(ref["last_logits"])
    worst = max(worst, float((logits[-1] - want).abs().max() / want.abs().max()))
    ids_out, _ = greedy(ids, weights, cfg, len(read_ids(os.path.join(folder, "greedy_ids.txt"))))
    ok = worst <= 1e-4 and ids_out == read_ids(os.path.join(folder, "greedy_ids.txt"))
    print(f"{folder}: worst relative logit difference {worst:.2e}, greedy {'equal' if ok else 'DIFFERENT'}")
    return ok


def random_checkpoint(cfg, seed):
    g = torch.Generator().manual_seed(seed)
    C, nh, L = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]
    f, ffn, V, k = C // nh, cfg["intermediate_size"], cfg["vocab_size"], cfg["conv_kernel"]
    inner = 4 * f if cfg["ttt_layer_type"] == "mlp" else f

    def rand(*shape, scale=0.1, mean=0.0):
        return (torch.randn(*shape, generator=g) * scale + mean).float()

    w = {"model.embed_tokens.weight": rand(V, C, scale=0.5), "model.norm.weight": rand(C, mean=1.0)}
    if not cfg["tie_word_embeddings"]:
        w["lm_head.weight"] = rand(V, C, scale=0.3)
    kv = (cfg.get("num_key_value_heads") or nh) * f
    for i, kind in enumerate(layer_types(cfg)):
        pre, s = f"model.layers.{i}.", f"model.layers.{i}.seq_modeling_block."
        w[pre + "seq_norm.weight"] = rand(C, mean=1.0)
        w[pre + "ffn_norm.weight"] = rand(C, mean=1.0)
        w[pre + "mlp.gate_proj.weight"] = rand(ffn, C, scale=0.15)
        w[pre + "mlp.up_proj.weight"] = rand(ffn, C, scale=0.15)
        w[pre + "mlp.down_proj.weight"] = rand(C, ffn, scale=0.15)
        if kind == "attention":
            for name, rows in (("q_proj", C), ("k_proj", kv), ("v_proj", kv), ("o_proj", C)):
                w[pre + f"self_attn.{name}.weight"] = rand(rows, C, scale=0.3)
            continue
        if cfg["pre_conv"]:
            w[pre + "conv.norm.weight"] = rand(C, mean=1.0)
            w[pre + "conv.conv.weight"] = rand(C, 1, k, scale=0.3)
            w[pre + "conv.conv.bias"] = rand(C, scale=0.1)
        w[s + "q_proj.weight"] = rand(C, C, scale=0.2)
        if cfg["share_qk"]:
            for name in ("conv_q", "conv_k"):
                w[s + name + ".weight"] = rand(C, 1, k, scale=0.4)
                w[s + name + ".bias"] = rand(C, scale=0.1)
        else:
            w[s + "k_proj.weight"] = rand(C, C, scale=0.2)
        w[s + "v_proj.weight"] = rand(C, C, scale=0.2)
        w[s + "o_proj.weight"] = rand(C, C, scale=0.2)
        if cfg["use_gate"]:
            w[s + "g_proj.weight"] = rand(C, C, scale=0.3)
        w[s + "learnable_token_idx"] = rand(cfg["mini_batch_size"], scale=0.05)
        w[s + "learnable_ttt_lr_weight"] = rand(nh, 1, C, scale=0.2)
        w[s + "learnable_ttt_lr_bias"] = rand(nh, 1, scale=0.5)
        w[s + "ttt_norm_weight"] = rand(nh, f, mean=1.0)
        w[s + "ttt_norm_bias"] = rand(nh, f, scale=0.1)
        w[s + "post_norm.weight"] = rand(C, mean=1.0)
        w[s + "post_norm.bias"] = rand(C, scale=0.1)
        w[s + "W1"] = rand(nh, f, inner, scale=0.3)
        w[s + "b1"] = rand(nh, 1, inner, scale=0.1)
        if cfg["ttt_layer_type"] == "mlp":
            w[s + "W2"] = rand(nh, inner, f, scale=0.3)
            w[s + "b2"] = rand(nh, 1, f, scale=0.1)
    return w


VARIANTS = {
    # name: (options, prompt length)
    "linear_gate_shareqk_untied_mb8": (dict(ttt_layer_type="linear", use_gate=True, share_qk=True,
                                            tie_word_embeddings=False, mini_batch_size=8), 21),
    "mlp_preconv_untied_mb16": (dict(ttt_layer_type="mlp", pre_conv=True, tie_word_embeddings=False,
                                     mini_batch_size=16), 37),
    "linear_preconv_gate_shareqk_mb4": (dict(ttt_layer_type="linear", pre_conv=True, use_gate=True, share_qk=True,
                                             mini_batch_size=4, ttt_base_lr=0.5), 18),
    "mlp_shareqk_gate_mb8": (dict(ttt_layer_type="mlp", share_qk=True, use_gate=True, mini_batch_size=8), 24),
    # Hybrids: attention layers (grouped-query, Llama's RoPE at absolute positions) between TTT layers.
    "hybrid_linear_gqa_preconv_gate_mb8": (dict(ttt_layer_type="linear", num_hidden_layers=4, pre_conv=True,
                                                use_gate=True, mini_batch_size=8, num_key_value_heads=2,
                                                layer_types=["ttt", "attention", "ttt", "attention"]), 29),
    "hybrid_mlp_shareqk_untied_mb4": (dict(ttt_layer_type="mlp", num_hidden_layers=3, share_qk=True,
                                           tie_word_embeddings=False, mini_batch_size=4,
                                           layer_types=["attention", "ttt", "ttt"]), 19),
}


def write_variant(out_dir, name, options, length, seed):
    cfg = dict(DEFAULTS)
    cfg.update(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
               max_position_embeddings=256, model_type="ttt", bos_token_id=1, eos_token_id=2)
    cfg.update(options)
    weights32 = random_checkpoint(cfg, seed)
    weights = {key: value.double() for key, value in weights32.items()}
    g = torch.Generator().manual_seed(seed + 1)
    ids = [int(v) for v in torch.randint(3, cfg["vocab_size"], (length,), generator=g)]
    logits = forward(ids, weights, cfg)
    greedy_ids, margin = greedy(ids, weights, cfg, 8)
    folder = os.path.join(out_dir, name)
    os.makedirs(folder, exist_ok=True)
    json.dump(cfg, open(os.path.join(folder, "config.json"), "w"), indent=1)
    save_file({key: value.contiguous() for key, value in weights32.items()}, os.path.join(folder, "model.safetensors"))
    open(os.path.join(folder, "input_ids.txt"), "w").write(",".join(map(str, ids)))
    open(os.path.join(folder, "greedy_ids.txt"), "w").write(",".join(map(str, greedy_ids)))
    json.dump({"seed": seed, "logits": [[float(v) for v in row] for row in logits], "min_greedy_margin": margin},
              open(os.path.join(folder, "reference.json"), "w"))
    print(f"{name}: {length} prompt tokens, greedy margin {margin:.3f}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="tests/fixtures/ttt")
    parser.add_argument("--official", default="tests/fixtures/ttt_official")
    args = parser.parse_args()
    if not all(check_official(os.path.join(args.official, name)) for name in ("linear_base", "mlp_base")):
        sys.exit("this implementation does not reproduce the official fixtures; nothing written")
    for index, (name, (options, length)) in enumerate(VARIANTS.items()):
        write_variant(args.out, name, options, length, seed=4000 + index)


if __name__ == "__main__":
    main()
