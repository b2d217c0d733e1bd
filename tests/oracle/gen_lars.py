#!/usr/bin/python3
"""Independent PyTorch oracle for the LARS method plugin (methods/lars/).

Usage: /usr/bin/python3 tests/oracle/gen_lars.py [tests/oracle/fixtures] [--selfcheck]

LARS ("Parameter Efficiency Is Not Memory Efficiency", arXiv 2604.22783),
variant `pooled`, written here from its equations (docs/methods/lars.md) with
PyTorch's own LayerNorm, GELU and autograd, in float64; no code is shared
with methods/lars/lars.c.  On each adapted linear with input X [B,T,H]:

    p  = mean(X over pooled positions) + X[last valid position]
    h  = p A^T ;  hh = LayerNorm(h)          (eps 1e-5, learned scale/shift)
    g  = sigmoid(tau1 p Gx^T + tau2 hh Gh^T)
    h2 = hh + g @ M                           (row vector g times M)
    h3 = h2 + Linear2(GELU(Linear1(h2)))
    Y  = X W^T (+ b) + alpha * (h3 B^T)       at every position

Variant `gated` (case option variant="gated"), on each adapted linear, per
position:

    z    = x / sqrt(mean(x^2) + 1e-6)        RMSNorm without learned scale
    gate = 1 + alpha * ((z U) V)             U [H, r], V [r, nb], nb = ceil(H / block)
    Y    = (x * gate.repeat_interleave(block)[:H]) W^T (+ b)

Valid positions of a row: 0..last with last = min(t* + 1, T - 1), t* its last
target != -100; a row without one has no last term and (pool=valid) p = 0.

The base model is an existing core-oracle fixture (gqa_bias, tied_mha: read
from <out>/<base>/model.safetensors, checked equal to gen_oracle's weights).
For each case, <out>/lars_<case>/expected.safetensors holds
  __metadata__     base, rank, targets, pool: the plugin options to use
  tokens, targets  I32 [B,T]
  loss             F32 [1]
  param.<name>     F32  LARS parameter values (non-zero B, Gx, Gh, M != I ...)
  grad.<name>      F32  d loss / d parameter, for every LARS parameter
  absterms.<name>  F32 [1]  gated alpha only: sum of |terms| of its gradient
Names are the plugin's: model.layers.<l>.<q_proj|...>.lars.<A|B|G_x|...>.
Deterministic: rerunning gives identical bytes.
"""
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_oracle as go  # noqa: E402  (safetensors I/O, base model helpers)

torch.set_num_threads(1)
IGNORE = -100
LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SHORT = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj",
         "gate": "gate_proj", "up": "up_proj", "down": "down_proj"}
GATED_PARAMS = ["U", "V", "alpha"]
PARAMS = ["A", "B", "G_x", "G_h", "M", "ln.weight", "ln.bias", "ffn1.weight", "ffn1.bias",
          "ffn2.weight", "ffn2.bias", "alpha", "tau1", "tau2"]

CASES = [
    # every linear kind adapted, pooling over valid positions; row 0 has a
    # target at T-1 (last clamps to T-1), row 1 is padded, row 2 has no target
    dict(case="lars_gqa_all", base="gqa_bias", rank=3, targets="q,k,v,o,gate,up,down",
         pool="valid", B=3, T=7, seed=2604),
    # the default targets, pooling over every position, tied embeddings
    dict(case="lars_tied_qv", base="tied_mha", rank=4, targets="q,v",
         pool="all", B=2, T=9, seed=2278),
    # variant gated on every linear, blocks of 8 (dim 32: 4 gate values;
    # ffn 48: 6), padded rows
    dict(case="lars_gated_gqa_all", base="gqa_bias", rank=3, targets="q,k,v,o,gate,up,down",
         variant="gated", block=8, B=3, T=7, seed=3301),
    # variant gated, blocks of 16 with a partial last block (dim 24: 16 + 8;
    # ffn 40: 16 + 16 + 8), tied embeddings
    dict(case="lars_gated_tied", base="tied_mha", rank=2, targets="q,v,o,up,down",
         variant="gated", block=16, B=2, T=9, seed=3302),
]


def variant(lc):
    return lc.get("variant", "pooled")


def base_case(name):
    for c in go.CASES:
        if c["case"] == name:
            return c
    raise SystemExit("unknown base case " + name)


def in_out(c, kind):
    D, Q, KV, F = c["dim"], c["heads"] * c["head_dim"], c["kv_heads"] * c["head_dim"], c["ffn"]
    return {"q_proj": (D, Q), "k_proj": (D, KV), "v_proj": (D, KV), "o_proj": (Q, D),
            "gate_proj": (D, F), "up_proj": (D, F), "down_proj": (F, D)}[kind]


def lars_shapes(H, out, r):
    return {"A": [r, H], "B": [out, r], "G_x": [r, H], "G_h": [r, r], "M": [r, r],
            "ln.weight": [r], "ln.bias": [r], "ffn1.weight": [4 * r, r], "ffn1.bias": [4 * r],
            "ffn2.weight": [r, 4 * r], "ffn2.bias": [r], "alpha": [1], "tau1": [1], "tau2": [1]}


def adapted(lc):
    return [SHORT[t] for t in lc["targets"].split(",")]


def gated_shapes(H, r, block):
    return {"U": [H, r], "V": [r, -(-H // block)], "alpha": [1]}


def make_lars_params(c, lc):
    """Non-trivial values on every path: B, Gx, Gh non-zero, M != I; gated:
    V large enough that gates range well away from 1."""
    g = torch.Generator().manual_seed(lc["seed"])
    out = {}
    if variant(lc) == "gated":
        for layer in range(c["layers"]):
            for kind in adapted(lc):
                H, _ = in_out(c, kind)
                pre = "model.layers.%d.%s.lars." % (layer, kind)
                for name, shape in gated_shapes(H, lc["rank"], lc["block"]).items():
                    n = torch.randn(shape, generator=g, dtype=torch.float64)
                    v = 0.8 + 0.2 * n if name == "alpha" else 0.3 * n
                    out[pre + name] = v.to(torch.float32)
        return out
    for layer in range(c["layers"]):
        for kind in adapted(lc):
            H, O = in_out(c, kind)
            pre = "model.layers.%d.%s.lars." % (layer, kind)
            for name, shape in lars_shapes(H, O, lc["rank"]).items():
                n = torch.randn(shape, generator=g, dtype=torch.float64)
                if name == "M":
                    v = torch.eye(lc["rank"], dtype=torch.float64) + 0.3 * n
                elif name == "ln.weight":
                    v = 1.0 + 0.2 * n
                elif name in ("alpha", "tau1", "tau2"):
                    v = 0.8 + 0.2 * n
                elif name == "G_x":
                    v = 0.15 * n
                elif name.endswith("bias"):
                    v = 0.1 * n
                else:
                    v = 0.3 * n
                out[pre + name] = v.to(torch.float32)
    return out


def make_batch(c, lc):
    g = torch.Generator().manual_seed(lc["seed"] + 1)
    B, T = lc["B"], lc["T"]
    seq = torch.randint(0, c["vocab"], (B, T + 1), generator=g, dtype=torch.int64)
    tokens, targets = seq[:, :T].clone(), seq[:, 1:].clone()
    if lc["case"] in ("lars_gqa_all", "lars_gated_gqa_all"):
        targets[0, 2] = IGNORE           # mid-sequence: still a valid position
        targets[1, T - 3:] = IGNORE      # padded: t* = T-4, last = T-3
        targets[2, :] = IGNORE           # no valid position at all
    else:
        targets[0, 1] = IGNORE
        targets[0, 5:] = IGNORE          # t* = 4, last = 5
    return tokens, targets


def spans(targets, pool):
    """[(n_pooled, last or None)] per row."""
    B, T = targets.shape
    out = []
    for b in range(B):
        kept = (targets[b] != IGNORE).nonzero().reshape(-1)
        last = min(int(kept[-1]) + 1, T - 1) if kept.numel() else None
        n = T if pool == "all" else (last + 1 if last is not None else 0)
        out.append((n, last))
    return out


def lars_output(x, L, pre, sp, r):
    """alpha * o, [B,1,out]: the per-sequence vector added at every position."""
    rows = []
    for b, (n, last) in enumerate(sp):
        p = x[b, :n].mean(0) if n > 0 else torch.zeros(x.shape[-1], dtype=x.dtype)
        if last is not None:
            p = p + x[b, last]
        rows.append(p)
    p = torch.stack(rows)                                   # [B,H]
    h = p @ L[pre + "A"].t()
    hh = torch.nn.functional.layer_norm(h, (r,), L[pre + "ln.weight"], L[pre + "ln.bias"], eps=1e-5)
    g = torch.sigmoid(L[pre + "tau1"] * (p @ L[pre + "G_x"].t()) + L[pre + "tau2"] * (hh @ L[pre + "G_h"].t()))
    h2 = hh + g @ L[pre + "M"]
    f = torch.nn.functional.linear(h2, L[pre + "ffn1.weight"], L[pre + "ffn1.bias"])
    f = torch.nn.functional.linear(torch.nn.functional.gelu(f), L[pre + "ffn2.weight"], L[pre + "ffn2.bias"])
    h3 = h2 + f
    o = h3 @ L[pre + "B"].t()
    return (L[pre + "alpha"] * o)[:, None, :]


# d loss / d alpha of a gated adapter is a sum over every position and
# feature, sum(e * x * c) with e the gradient of the gated input; its terms
# cancel (on the fixtures up to ~200x), so fp32 cannot match it to 1e-4 of
# its own value.  The fixture stores sum(|e * x * c|), the scale against
# which a floating-point sum's error is bounded, as absterms.<alpha name>.
ABS_TERMS = {}


def gated_input(x, L, pre, block):
    """x * gate, the gate computed per position from RMSNorm(x) (no scale)."""
    H = x.shape[-1]
    z = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    c = (z @ L[pre + "U"]) @ L[pre + "V"]
    gate = 1 + L[pre + "alpha"] * c
    xin = x * gate.repeat_interleave(block, dim=-1)[..., :H]
    if xin.requires_grad:
        xc = (x * c.repeat_interleave(block, dim=-1)[..., :H]).detach()
        xin.register_hook(lambda e: ABS_TERMS.__setitem__(pre + "alpha", float((e * xc).abs().sum())))
    return xin


def forward(c, lc, P, L, tokens, targets):
    """Decoder (Llama/Qwen2, as gen_oracle.forward) with LARS on the adapted linears."""
    B, T = tokens.shape
    H, KV, hd, eps = c["heads"], c["kv_heads"], c["head_dim"], c["eps"]
    sp = spans(targets, lc["pool"]) if variant(lc) == "pooled" else None
    kinds = adapted(lc)
    r = lc["rank"]

    def linear(x, layer, kind, group):
        p = "model.layers.%d." % layer
        if kind in kinds and variant(lc) == "gated":
            xin = gated_input(x, L, "model.layers.%d.%s.lars." % (layer, kind), lc["block"])
            y = xin @ P[p + group + "." + kind + ".weight"].t()
            if c["bias"] and kind in ("q_proj", "k_proj", "v_proj"):
                y = y + P[p + group + "." + kind + ".bias"]
            return y
        y = x @ P[p + group + "." + kind + ".weight"].t()
        if c["bias"] and kind in ("q_proj", "k_proj", "v_proj"):
            y = y + P[p + group + "." + kind + ".bias"]
        if kind in kinds:
            y = y + lars_output(x, L, "model.layers.%d.%s.lars." % (layer, kind), sp, r)
        return y

    x = P["model.embed_tokens.weight"][tokens]
    cos, sin = go.rope_cos_sin(c, T, hd, c["theta"])
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    rep = H // KV
    for i in range(c["layers"]):
        p = "model.layers.%d." % i
        h = go.rms_norm(x, P[p + "input_layernorm.weight"], eps)
        q = linear(h, i, "q_proj", "self_attn").view(B, T, H, hd).transpose(1, 2)
        k = linear(h, i, "k_proj", "self_attn").view(B, T, KV, hd).transpose(1, 2)
        v = linear(h, i, "v_proj", "self_attn").view(B, T, KV, hd).transpose(1, 2)
        q = q * cos + go.rotate_half(q) * sin
        k = k * cos + go.rotate_half(k) * sin
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        s = s.masked_fill(~mask, float("-inf"))
        a = (torch.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(B, T, H * hd)
        x = x + linear(a, i, "o_proj", "self_attn")
        h = go.rms_norm(x, P[p + "post_attention_layernorm.weight"], eps)
        g = linear(h, i, "gate_proj", "mlp")
        u = linear(h, i, "up_proj", "mlp")
        x = x + linear(torch.nn.functional.silu(g) * u, i, "down_proj", "mlp")
    x = go.rms_norm(x, P["model.norm.weight"], eps)
    W = P["model.embed_tokens.weight"] if c["tied"] else P["lm_head.weight"]
    lp = torch.log_softmax(x @ W.t(), dim=-1)
    keep = targets != IGNORE
    nll = -lp.gather(-1, targets.clamp(min=0)[..., None])[..., 0] * keep
    return nll.sum() / keep.sum()


def compute(c, lc, params, lars, tokens, targets):
    ABS_TERMS.clear()
    P = {k: v.to(torch.float64) for k, v in params.items()}
    L = {k: v.to(torch.float64).clone().requires_grad_(True) for k, v in lars.items()}
    loss = forward(c, lc, P, L, tokens, targets)
    loss.backward()
    return loss.detach(), {k: L[k].grad.detach().clone() for k in L}


def selfcheck(c, lc, params, lars, tokens, targets, grads):
    """Central differences in float64 on two entries of every LARS tensor of
    the first and last adapter (scalars: their only entry)."""
    g = torch.Generator().manual_seed(7)
    P = {k: v.to(torch.float64) for k, v in params.items()}
    L0 = {k: v.to(torch.float64) for k, v in lars.items()}
    names = list(L0)
    per = len(GATED_PARAMS) if variant(lc) == "gated" else len(PARAMS)
    chosen = names[:per] + names[-per:]
    worst = 0.0
    for name in chosen:
        t = L0[name]
        for _ in range(2):
            idx = int(torch.randint(0, t.numel(), (1,), generator=g))
            vals = []
            for sgn in (1, -1):
                L = dict(L0)
                tt = t.clone().reshape(-1)
                tt[idx] += sgn * 1e-6
                L[name] = tt.reshape(t.shape)
                with torch.no_grad():
                    vals.append(float(forward(c, lc, P, L, tokens, targets)))
            fd = (vals[0] - vals[1]) / 2e-6
            an = float(grads[name].reshape(-1)[idx])
            err = abs(fd - an) / max(abs(an), 1e-3)
            worst = max(worst, err)
            if err > 1e-5:
                raise SystemExit("selfcheck FAILED %s[%d]: fd %.10g autograd %.10g" % (name, idx, fd, an))
    return worst


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    out = args[0] if args else os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
    check = "--selfcheck" in sys.argv
    for lc in CASES:
        c = base_case(lc["base"])
        stored = go.read_safetensors(os.path.join(out, lc["base"], "model.safetensors"))
        params = go.make_params(c)
        for n in params:  # the base fixture is what gen_oracle makes
            if not torch.equal(stored[n], params[n]):
                raise SystemExit("%s/%s differs from gen_oracle's weights: run `make oracle` first"
                                 % (lc["base"], n))
        lars = make_lars_params(c, lc)
        tokens, targets = make_batch(c, lc)
        loss, grads = compute(c, lc, params, lars, tokens, targets)
        d = os.path.join(out, lc["case"])
        os.makedirs(d, exist_ok=True)
        items = [("tokens", tokens, "I32"), ("targets", targets, "I32"), ("loss", loss.reshape(1), "F32")]
        items += [("param." + n, lars[n], "F32") for n in lars]
        items += [("grad." + n, grads[n], "F32") for n in lars]
        items += [("absterms." + n, torch.tensor([ABS_TERMS[n]]), "F32") for n in lars if n in ABS_TERMS]
        if variant(lc) == "gated":
            meta = {"base": lc["base"], "rank": str(lc["rank"]), "targets": lc["targets"], "variant": "gated",
                    "block": str(lc["block"])}
        else:
            meta = {"base": lc["base"], "rank": str(lc["rank"]), "targets": lc["targets"], "pool": lc["pool"]}
        go.write_safetensors(os.path.join(d, "expected.safetensors"), items, metadata=meta)
        msg = "%s: loss %.6f, %d LARS tensors" % (lc["case"], float(loss), len(lars))
        if check:
            msg += "  selfcheck worst rel err %.2e" % selfcheck(c, lc, params, lars, tokens, targets, grads)
        print(msg)


if __name__ == "__main__":
    main()
