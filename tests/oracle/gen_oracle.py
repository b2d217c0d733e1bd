#!/usr/bin/python3
"""Independent PyTorch oracle for ftbench's decoder (Llama / Qwen2 semantics).

Usage: /usr/bin/python3 tests/oracle/gen_oracle.py tests/oracle/fixtures [--selfcheck]

For each case it writes <out>/<case>/{config.json, model.safetensors,
expected.safetensors}.  The reference forward/backward is plain torch in
float64, written from the Hugging Face modeling code's semantics, not from
ftbench's C sources.  Output is deterministic (fixed seeds, one thread, no
timestamps): rerunning gives identical bytes.

expected.safetensors holds
  tokens, targets   I32 [B,T]        (targets: -100 = ignored)
  loss              F32 [1]          mean cross-entropy over kept targets
  seq_loss          F32 [B]          per-sequence mean over its kept targets
  grad.<hf name>    F32              d loss / d parameter, for every parameter
"""
import json
import math
import os
import struct
import sys

import torch

torch.set_num_threads(1)
IGNORE = -100

CASES = [
    dict(case="gqa_bias", model_type="qwen2", vocab=61, dim=32, layers=2,
         heads=4, kv_heads=2, head_dim=8, ffn=48, bias=True, tied=False,
         theta=10000.0, eps=1e-6, B=2, T=7, seed=1234, bf16=False),
    dict(case="tied_mha", model_type="llama", vocab=50, dim=24, layers=2,
         heads=3, kv_heads=3, head_dim=8, ffn=40, bias=False, tied=True,
         theta=500000.0, eps=1e-5, B=1, T=9, seed=4321, bf16=False),
    # Same weights as gqa_bias, rounded to bf16 and stored as BF16.
    dict(case="gqa_bias_bf16", model_type="qwen2", vocab=61, dim=32, layers=2,
         heads=4, kv_heads=2, head_dim=8, ffn=48, bias=True, tied=False,
         theta=10000.0, eps=1e-6, B=2, T=7, seed=1234, bf16=True),
    # Llama 3.1/3.2 rope scaling.  head_dim 16 and theta 5e5 give
    # wavelengths 6.3, 33, 167, 862, ... so that with an original context of
    # 256 (high_freq_wavelen 64, low_freq_wavelen 256) pairs 0-1 are kept,
    # pair 2 is interpolated and pairs 3-7 are divided by the factor: every
    # branch of the formula is used.
    dict(case="llama3_rope", model_type="llama", vocab=53, dim=32, layers=2,
         heads=4, kv_heads=2, head_dim=16, ffn=40, bias=False, tied=False,
         theta=500000.0, eps=1e-5, B=2, T=24, seed=2024, bf16=False, max_pos=2048,
         rope_scaling={"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": 256, "rope_type": "llama3"}),
    # Linear scaling, written with the legacy "type" key older configs use.
    dict(case="linear_rope", model_type="qwen2", vocab=61, dim=32, layers=2,
         heads=4, kv_heads=2, head_dim=8, ffn=48, bias=True, tied=True,
         theta=10000.0, eps=1e-6, B=2, T=12, seed=77, bf16=False, max_pos=256,
         rope_scaling={"type": "linear", "factor": 4.0}),
]


# --------------------------------------------------------------------------
# safetensors writer / reader (format: u64 LE header length, JSON header,
# padded with spaces to a multiple of 8, then raw little-endian data)
# --------------------------------------------------------------------------

def f32_to_bf16_bits(t):
    """Round-to-nearest-even float32 -> bfloat16 bit patterns (int32 tensor)."""
    b = t.to(torch.float32).contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    lsb = (b >> 16) & 1
    r = ((b + 0x7FFF + lsb) >> 16) & 0xFFFF
    return r


def bf16_bits_to_f32(bits):
    return (bits.to(torch.int64) << 16).to(torch.int32).view(torch.float32)


def tensor_bytes(t, dtype):
    if dtype == "F32":
        a = t.detach().to(torch.float32).contiguous().reshape(-1).tolist()
        return struct.pack("<%df" % len(a), *a)
    if dtype == "I32":
        a = t.detach().to(torch.int64).contiguous().reshape(-1).tolist()
        return struct.pack("<%di" % len(a), *a)
    if dtype == "BF16":
        a = f32_to_bf16_bits(t.detach().reshape(-1)).tolist()
        return struct.pack("<%dH" % len(a), *a)
    raise ValueError(dtype)


def write_safetensors(path, items, metadata=None):
    """items: list of (name, tensor, dtype) in file order."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    blobs = []
    off = 0
    for name, t, dtype in items:
        data = tensor_bytes(t, dtype)
        shape = list(t.shape)
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        buf = raw[base + a:base + b]
        cnt = 1
        for s in e["shape"]:
            cnt *= s
        if e["dtype"] == "F32":
            v = torch.tensor(struct.unpack("<%df" % cnt, buf), dtype=torch.float32)
        elif e["dtype"] == "I32":
            v = torch.tensor(struct.unpack("<%di" % cnt, buf), dtype=torch.int32)
        elif e["dtype"] == "BF16":
            bits = torch.tensor(struct.unpack("<%dH" % cnt, buf), dtype=torch.int64)
            v = bf16_bits_to_f32(bits)
        else:
            raise ValueError(e["dtype"])
        out[name] = v.reshape(e["shape"])
    return out


# --------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------

def param_shapes(c):
    D, H, KV, hd, F, V = c["dim"], c["heads"], c["kv_heads"], c["head_dim"], c["ffn"], c["vocab"]
    s = [("model.embed_tokens.weight", [V, D])]
    for i in range(c["layers"]):
        p = "model.layers.%d." % i
        s.append((p + "input_layernorm.weight", [D]))
        s.append((p + "self_attn.q_proj.weight", [H * hd, D]))
        s.append((p + "self_attn.k_proj.weight", [KV * hd, D]))
        s.append((p + "self_attn.v_proj.weight", [KV * hd, D]))
        if c["bias"]:
            s.append((p + "self_attn.q_proj.bias", [H * hd]))
            s.append((p + "self_attn.k_proj.bias", [KV * hd]))
            s.append((p + "self_attn.v_proj.bias", [KV * hd]))
        s.append((p + "self_attn.o_proj.weight", [D, H * hd]))
        s.append((p + "post_attention_layernorm.weight", [D]))
        s.append((p + "mlp.gate_proj.weight", [F, D]))
        s.append((p + "mlp.up_proj.weight", [F, D]))
        s.append((p + "mlp.down_proj.weight", [D, F]))
    s.append(("model.norm.weight", [D]))
    if not c["tied"]:
        s.append(("lm_head.weight", [V, D]))
    return s


def make_params(c):
    g = torch.Generator().manual_seed(c["seed"])
    params = {}
    for name, shape in param_shapes(c):
        n = torch.randn(shape, generator=g, dtype=torch.float64)
        if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
            v = 1.0 + 0.1 * n
        elif name.endswith(".bias"):
            v = 0.1 * n
        else:
            v = 0.2 * n
        v = v.to(torch.float32)  # what is stored in the checkpoint
        if c["bf16"]:
            v = bf16_bits_to_f32(f32_to_bf16_bits(v))
        params[name] = v
    return params


def make_batch(c):
    g = torch.Generator().manual_seed(c["seed"] + 7)
    B, T, V = c["B"], c["T"], c["vocab"]
    seq = torch.randint(0, V, (B, T + 1), generator=g, dtype=torch.int64)
    tokens = seq[:, :T].clone()
    targets = seq[:, 1:].clone()
    if c["case"].startswith("gqa_bias"):
        # sequence 1 is padded: its last 2 positions carry no target
        targets[1, T - 2:] = IGNORE
        targets[0, 2] = IGNORE          # one ignored target mid-sequence
    else:
        targets[0, T - 1] = IGNORE
        targets[0, 4] = IGNORE
    return tokens, targets


# --------------------------------------------------------------------------
# Reference model (float64, plain torch ops; Hugging Face Llama/Qwen2 semantics)
# --------------------------------------------------------------------------

def rms_norm(x, w, eps):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope_type(c):
    rs = c.get("rope_scaling")
    if rs is None:
        return "default"
    return rs.get("rope_type", rs.get("type"))


def scale_inv_freq(c, inv_freq):
    """rope_scaling applied to the inverse frequencies, as transformers'
    modeling_rope_utils.py (_compute_linear_scaling_rope_parameters,
    _compute_llama3_parameters) computes it, here in float64."""
    kind, rs = rope_type(c), c.get("rope_scaling")
    if kind == "default":
        return inv_freq
    if kind == "linear":
        return inv_freq / rs["factor"]
    assert kind == "llama3", kind
    factor = rs["factor"]
    low_freq_factor = rs["low_freq_factor"]
    high_freq_factor = rs["high_freq_factor"]
    old_context_len = rs["original_max_position_embeddings"]
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed_inv_freq = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
    is_medium_freq = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium_freq, smoothed_inv_freq, inv_freq_llama)


def scaled_freq_scalar(c, i):
    """The same frequency for one pair, written as branches (Meta's
    apply_scaling of the Llama 3.1 reference code) for the loop forward."""
    f = c["theta"] ** (-2.0 * i / c["head_dim"])
    kind, rs = rope_type(c), c.get("rope_scaling")
    if kind == "linear":
        return f / rs["factor"]
    if kind != "llama3":
        return f
    old = rs["original_max_position_embeddings"]
    wavelen = 2 * math.pi / f
    if wavelen < old / rs["high_freq_factor"]:
        return f
    if wavelen > old / rs["low_freq_factor"]:
        return f / rs["factor"]
    smooth = (old / wavelen - rs["low_freq_factor"]) / (rs["high_freq_factor"] - rs["low_freq_factor"])
    return (1 - smooth) * f / rs["factor"] + smooth * f


def rope_cos_sin(c, T, hd, theta):
    i = torch.arange(0, hd // 2, dtype=torch.float64)
    inv_freq = scale_inv_freq(c, theta ** (-2.0 * i / hd))
    pos = torch.arange(T, dtype=torch.float64)
    ang = pos[:, None] * inv_freq[None, :]          # [T, hd/2]
    emb = torch.cat((ang, ang), dim=-1)             # [T, hd]
    return emb.cos(), emb.sin()


def forward(c, P, tokens, targets):
    """P: dict name -> float64 tensor (requires_grad).  Returns (loss, seq_loss)."""
    B, T = tokens.shape
    H, KV, hd, eps = c["heads"], c["kv_heads"], c["head_dim"], c["eps"]
    x = P["model.embed_tokens.weight"][tokens]      # [B,T,D]
    cos, sin = rope_cos_sin(c, T, hd, c["theta"])
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    rep = H // KV
    for i in range(c["layers"]):
        p = "model.layers.%d." % i
        h = rms_norm(x, P[p + "input_layernorm.weight"], eps)
        q = h @ P[p + "self_attn.q_proj.weight"].t()
        k = h @ P[p + "self_attn.k_proj.weight"].t()
        v = h @ P[p + "self_attn.v_proj.weight"].t()
        if c["bias"]:
            q = q + P[p + "self_attn.q_proj.bias"]
            k = k + P[p + "self_attn.k_proj.bias"]
            v = v + P[p + "self_attn.v_proj.bias"]
        q = q.view(B, T, H, hd).transpose(1, 2)     # [B,H,T,hd]
        k = k.view(B, T, KV, hd).transpose(1, 2)
        v = v.view(B, T, KV, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        # GQA: query head hq uses kv head hq // rep
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        s = s.masked_fill(~mask, float("-inf"))
        a = torch.softmax(s, dim=-1) @ v            # [B,H,T,hd]
        a = a.transpose(1, 2).reshape(B, T, H * hd)
        x = x + a @ P[p + "self_attn.o_proj.weight"].t()
        h = rms_norm(x, P[p + "post_attention_layernorm.weight"], eps)
        g = h @ P[p + "mlp.gate_proj.weight"].t()
        u = h @ P[p + "mlp.up_proj.weight"].t()
        x = x + (torch.nn.functional.silu(g) * u) @ P[p + "mlp.down_proj.weight"].t()
    x = rms_norm(x, P["model.norm.weight"], eps)
    W = P["model.embed_tokens.weight"] if c["tied"] else P["lm_head.weight"]
    logits = x @ W.t()                              # [B,T,V]
    lp = torch.log_softmax(logits, dim=-1)
    keep = targets != IGNORE
    safe = targets.clamp(min=0)
    nll = -lp.gather(-1, safe[..., None])[..., 0] * keep
    loss = nll.sum() / keep.sum()
    seq_loss = nll.sum(1) / keep.sum(1)
    return loss, seq_loss


def compute(c, params, tokens, targets):
    P = {k: v.to(torch.float64).clone().requires_grad_(True) for k, v in params.items()}
    loss, seq_loss = forward(c, P, tokens, targets)
    loss.backward()
    grads = {k: P[k].grad.detach().clone() for k in P}
    return loss.detach(), seq_loss.detach(), grads


def naive_loss(c, params, tokens, targets):
    """Second, loop-based float64 forward (explicit RoPE pairs (i, i+hd/2),
    per-head / per-position attention) to cross-check forward()."""
    W = {k: v.to(torch.float64) for k, v in params.items()}
    B, T = tokens.shape
    H, KV, hd, eps = c["heads"], c["kv_heads"], c["head_dim"], c["eps"]
    half = hd // 2

    def norm(v, w):
        return v / math.sqrt(float((v * v).mean()) + eps) * w

    def rope(v, pos):
        out = v.clone()
        for i in range(half):
            ang = pos * scaled_freq_scalar(c, i)
            a, b = v[i], v[i + half]
            out[i] = a * math.cos(ang) - b * math.sin(ang)
            out[i + half] = b * math.cos(ang) + a * math.sin(ang)
        return out

    total, count = 0.0, 0
    for bi in range(B):
        xs = [W["model.embed_tokens.weight"][int(tokens[bi, t])].clone() for t in range(T)]
        for li in range(c["layers"]):
            p = "model.layers.%d." % li
            qs, ks, vs = [], [], []
            for t in range(T):
                h = norm(xs[t], W[p + "input_layernorm.weight"])
                q = W[p + "self_attn.q_proj.weight"].mv(h)
                k = W[p + "self_attn.k_proj.weight"].mv(h)
                v = W[p + "self_attn.v_proj.weight"].mv(h)
                if c["bias"]:
                    q = q + W[p + "self_attn.q_proj.bias"]
                    k = k + W[p + "self_attn.k_proj.bias"]
                    v = v + W[p + "self_attn.v_proj.bias"]
                qs.append([rope(q[hh * hd:(hh + 1) * hd], t) for hh in range(H)])
                ks.append([rope(k[g * hd:(g + 1) * hd], t) for g in range(KV)])
                vs.append([v[g * hd:(g + 1) * hd] for g in range(KV)])
            new = []
            for t in range(T):
                heads = []
                for hh in range(H):
                    g = hh // (H // KV)
                    sc = [float(qs[t][hh].dot(ks[s][g])) / math.sqrt(hd) for s in range(t + 1)]
                    mx = max(sc)
                    e = [math.exp(z - mx) for z in sc]
                    z = sum(e)
                    heads.append(sum(e[s] / z * vs[s][g] for s in range(t + 1)))
                x = xs[t] + W[p + "self_attn.o_proj.weight"].mv(torch.cat(heads))
                h = norm(x, W[p + "post_attention_layernorm.weight"])
                gt = W[p + "mlp.gate_proj.weight"].mv(h)
                up = W[p + "mlp.up_proj.weight"].mv(h)
                act = gt / (1 + torch.exp(-gt)) * up
                new.append(x + W[p + "mlp.down_proj.weight"].mv(act))
            xs = new
        head = W["model.embed_tokens.weight"] if c["tied"] else W["lm_head.weight"]
        for t in range(T):
            y = int(targets[bi, t])
            if y == IGNORE:
                continue
            lg = head.mv(norm(xs[t], W["model.norm.weight"]))
            mx = float(lg.max())
            total += -(float(lg[y]) - mx - math.log(float(torch.exp(lg - mx).sum())))
            count += 1
    return total / count


def selfcheck(c, params, tokens, targets, grads, n_per=2):
    """Central finite differences in float64 on a few entries per tensor."""
    g = torch.Generator().manual_seed(99)
    worst = 0.0
    P0 = {k: v.to(torch.float64) for k, v in params.items()}
    for name in P0:
        t = P0[name]
        for _ in range(n_per):
            idx = int(torch.randint(0, t.numel(), (1,), generator=g))
            if name == "model.embed_tokens.weight":  # pick a row the batch uses
                row = int(tokens.reshape(-1)[idx % tokens.numel()])
                idx = row * t.shape[1] + idx % t.shape[1]
            h = 1e-6
            vals = []
            for sgn in (1, -1):
                P = dict(P0)
                tt = t.clone().reshape(-1)
                tt[idx] += sgn * h
                P[name] = tt.reshape(t.shape)
                with torch.no_grad():
                    vals.append(float(forward(c, P, tokens, targets)[0]))
            fd = (vals[0] - vals[1]) / (2 * h)
            an = float(grads[name].reshape(-1)[idx])
            err = abs(fd - an) / max(abs(an), 1e-3)
            worst = max(worst, err)
            if err > 1e-5:
                raise SystemExit("selfcheck FAILED %s[%d]: fd %.10g autograd %.10g"
                                 % (name, idx, fd, an))
    return worst


# --------------------------------------------------------------------------

def hf_config(c):
    cfg = {
        "architectures": ["Qwen2ForCausalLM" if c["model_type"] == "qwen2" else "LlamaForCausalLM"],
        "model_type": c["model_type"],
        "hidden_size": c["dim"],
        "num_hidden_layers": c["layers"],
        "num_attention_heads": c["heads"],
        "num_key_value_heads": c["kv_heads"],
        "head_dim": c["head_dim"],
        "intermediate_size": c["ffn"],
        "vocab_size": c["vocab"],
        "max_position_embeddings": c.get("max_pos", 64),
        "rope_theta": c["theta"],
        "rms_norm_eps": c["eps"],
        "tie_word_embeddings": c["tied"],
        "attention_bias": c["bias"],
        "hidden_act": "silu",
        "torch_dtype": "bfloat16" if c["bf16"] else "float32",
    }
    if "rope_scaling" in c:
        cfg["rope_scaling"] = c["rope_scaling"]
    return cfg


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    out = args[0] if args else os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
    check = "--selfcheck" in sys.argv
    for c in CASES:
        d = os.path.join(out, c["case"])
        os.makedirs(d, exist_ok=True)
        params = make_params(c)
        tokens, targets = make_batch(c)
        loss, seq_loss, grads = compute(c, params, tokens, targets)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(hf_config(c), f, indent=2)
            f.write("\n")
        wdt = "BF16" if c["bf16"] else "F32"
        write_safetensors(os.path.join(d, "model.safetensors"),
                          [(n, params[n], wdt) for n, _ in param_shapes(c)],
                          metadata={"format": "pt"})
        items = [("tokens", tokens, "I32"), ("targets", targets, "I32"),
                 ("loss", loss.reshape(1), "F32"), ("seq_loss", seq_loss, "F32")]
        items += [("grad." + n, grads[n], "F32") for n, _ in param_shapes(c)]
        write_safetensors(os.path.join(d, "expected.safetensors"), items)
        # round trip: what the files hold is what was computed
        back = read_safetensors(os.path.join(d, "model.safetensors"))
        for n in params:
            assert torch.equal(back[n], params[n]), n
        msg = "%s: loss %.6f seq_loss %s" % (c["case"], float(loss),
                                             ", ".join("%.6f" % v for v in seq_loss.tolist()))
        if check:
            nl = naive_loss(c, params, tokens, targets)
            if abs(nl - float(loss)) > 1e-12 * abs(nl):
                raise SystemExit("selfcheck FAILED: loop forward %.15g vs forward() %.15g"
                                 % (nl, float(loss)))
            msg += "  loop-forward diff %.1e" % abs(nl - float(loss))
            msg += "  selfcheck worst rel err %.2e" % selfcheck(c, params, tokens, targets, grads)
        print(msg)


if __name__ == "__main__":
    main()
