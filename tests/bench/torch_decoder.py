#!/usr/bin/python3
"""torch_decoder.py — the PyTorch side of `make bench-vs-torch`.

The same decoder as ftbench's core (Llama / Qwen2 semantics), in float32,
written as a PyTorch user would: Hugging Face's eager modules (additive
causal mask, softmax in fp32, repeat_kv for grouped-query attention, the
LM head's full [T, V] logits into F.cross_entropy), PEFT's LoRA, the MeZO
paper's in-place seed trick and torch.utils.checkpoint per decoder layer.
Its helpers and parameter names are those of the float64 oracle
(tests/oracle/gen_oracle.py), so its checkpoints load in ftbench.

The configuration of a cell comes from an ftbench record (its model.config,
seq, batch, steps, warm-up, lr, seed, threads): the shapes are ftbench's by
construction.  Each invocation is one process, so its peak RSS is one cell's.

  torch_decoder.py time  RECORD METHOD   one cell: warm-up + measured steps,
                                         JSON on stdout (step seconds, losses,
                                         trainable count, peak RSS, BLAS)
  torch_decoder.py check RECORD DIR METHODS
                                         write RECORD's model (seeded weights)
                                         to DIR as a checkpoint with a token
                                         file, and print the per-step losses
                                         of each method on them (JSON)

Methods (ftbench's defaults): full (every weight, AdamW), lora (rank 8,
alpha 16, q,k,v,o,gate,up,down, AdamW, base frozen), gc (lora with every
decoder layer checkpointed, as ftbench's gc wraps lora by default), mezo
(every weight, eps 1e-3, one ± pair per step, SGD update, no decay).

Threads: the caller sets OPENBLAS_NUM_THREADS / OMP_NUM_THREADS; this sets
torch's intra-op threads and OpenBLAS's to the record's thread count again
and reports the OpenBLAS kernel (openblas_get_corename) this process uses.
"""
import ctypes
import json
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "oracle"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torch.utils.checkpoint  # noqa: E402

import gen_oracle as ref  # noqa: E402  (rms_norm, rotate_half, scale_inv_freq, param_shapes, hf_config)

LORA_RANK, LORA_ALPHA = 8, 16.0
LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")
MEZO_EPS = 1e-3
ADAMW = dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)  # ftbench's AdamW, weight_decay 0


def fail(msg, code=2):
    sys.stderr.write("torch_decoder.py: %s\n" % msg)
    sys.exit(code)


def status_bytes(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return None


# --------------------------------------------------------------------------
# The cell's configuration, from ftbench's record
# --------------------------------------------------------------------------

def load_record(path):
    try:
        with open(path) as f:
            r = json.load(f)
        mc = r["model"]["config"]
        c = dict(model_type="qwen2" if mc["qkv_bias"] else "llama",
                 vocab=mc["vocab_size"], dim=mc["dim"], layers=mc["n_layers"],
                 heads=mc["n_heads"], kv_heads=mc["n_kv_heads"], head_dim=mc["head_dim"],
                 ffn=mc["ffn_dim"], bias=bool(mc["qkv_bias"]), tied=bool(mc["tie_embeddings"]),
                 theta=float(mc["rope_theta"]), eps=float(mc["norm_eps"]),
                 max_pos=mc["max_seq"], bf16=False, name=mc.get("name", "?"))
        cell = dict(seq=r["seq"], batch=r["batch"], steps=r["steps"], warmup=r["warmup_steps"],
                    lr=float(r["lr"]), seed=int(r["seed"]), threads=int(r["threads"]),
                    blas_core=r["host"]["blas_core"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        fail("%s: not an ftbench record with a model config (%s)" % (path, e))
    return c, cell


# --------------------------------------------------------------------------
# Model: parameters by Hugging Face name, as the oracle names them
# --------------------------------------------------------------------------

def make_params(c, seed):
    """ftbench's zoo initialisation: norms 1, everything else uniform with the
    standard deviation of normal(0, 0.02).  Other random numbers than
    ftbench's (timing only depends on the shapes)."""
    g = torch.Generator().manual_seed(seed)
    half = 0.02 * math.sqrt(3.0)
    P = {}
    for name, shape in ref.param_shapes(c):
        t = torch.empty(shape, dtype=torch.float32)
        if name.endswith("norm.weight"):
            t.fill_(1.0)
        else:
            t.uniform_(-half, half, generator=g)
        P[name] = t
    return P


def rope_tables(c, T):
    i = torch.arange(0, c["head_dim"] // 2, dtype=torch.float64)
    inv_freq = ref.scale_inv_freq(c, c["theta"] ** (-2.0 * i / c["head_dim"]))
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq[None, :]
    emb = torch.cat((ang, ang), dim=-1)
    return emb.cos().to(torch.float32), emb.sin().to(torch.float32)


class Decoder:
    def __init__(self, c, P, T):
        self.c, self.P = c, P
        self.lora = {}  # (layer, kind) -> (A, B, scale)
        self.cos, self.sin = rope_tables(c, T)
        self.mask = torch.full((T, T), torch.finfo(torch.float32).min).triu(1)  # HF's additive causal mask

    def linear(self, x, i, kind, W, b=None):
        y = F.linear(x, W, b)
        ad = self.lora.get((i, kind))
        if ad is not None:  # PEFT: result + lora_B(lora_A(x)) * scaling
            A, B, s = ad
            y = y + F.linear(F.linear(x, A), B) * s
        return y

    def block(self, i, x):
        c, P = self.c, self.P
        p = "model.layers.%d." % i
        B, T, _ = x.shape
        H, KV, hd = c["heads"], c["kv_heads"], c["head_dim"]
        h = ref.rms_norm(x, P[p + "input_layernorm.weight"], c["eps"])
        bias = (lambda n: P[p + "self_attn.%s_proj.bias" % n]) if c["bias"] else (lambda n: None)
        q = self.linear(h, i, "q", P[p + "self_attn.q_proj.weight"], bias("q")).view(B, T, H, hd).transpose(1, 2)
        k = self.linear(h, i, "k", P[p + "self_attn.k_proj.weight"], bias("k")).view(B, T, KV, hd).transpose(1, 2)
        v = self.linear(h, i, "v", P[p + "self_attn.v_proj.weight"], bias("v")).view(B, T, KV, hd).transpose(1, 2)
        q = q * self.cos + ref.rotate_half(q) * self.sin
        k = k * self.cos + ref.rotate_half(k) * self.sin
        rep = H // KV
        if rep > 1:  # HF's repeat_kv
            k = k[:, :, None].expand(B, KV, rep, T, hd).reshape(B, H, T, hd)
            v = v[:, :, None].expand(B, KV, rep, T, hd).reshape(B, H, T, hd)
        s = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(hd) + self.mask
        a = torch.matmul(torch.softmax(s, dim=-1, dtype=torch.float32), v)
        a = a.transpose(1, 2).reshape(B, T, H * hd)
        x = x + self.linear(a, i, "o", P[p + "self_attn.o_proj.weight"])
        h = ref.rms_norm(x, P[p + "post_attention_layernorm.weight"], c["eps"])
        g = self.linear(h, i, "gate", P[p + "mlp.gate_proj.weight"])
        u = self.linear(h, i, "up", P[p + "mlp.up_proj.weight"])
        return x + self.linear(F.silu(g) * u, i, "down", P[p + "mlp.down_proj.weight"])

    def loss(self, tokens, targets, checkpoint=False):
        c, P = self.c, self.P
        x = F.embedding(tokens, P["model.embed_tokens.weight"])
        for i in range(c["layers"]):
            if checkpoint:  # Hugging Face's gradient_checkpointing_enable(): one checkpoint per decoder layer
                x = torch.utils.checkpoint.checkpoint(self.block, i, x, use_reentrant=False)
            else:
                x = self.block(i, x)
        x = ref.rms_norm(x, P["model.norm.weight"], c["eps"])
        W = P["model.embed_tokens.weight"] if c["tied"] else P["lm_head.weight"]
        logits = F.linear(x, W)
        return F.cross_entropy(logits.view(-1, c["vocab"]), targets.reshape(-1))


def lora_in_out(c, kind):
    D, Q, KVD, Fd = c["dim"], c["heads"] * c["head_dim"], c["kv_heads"] * c["head_dim"], c["ffn"]
    return {"q": (D, Q), "k": (D, KVD), "v": (D, KVD), "o": (Q, D),
            "gate": (D, Fd), "up": (D, Fd), "down": (Fd, D)}[kind]


# --------------------------------------------------------------------------
# Methods: setup returns (step(tokens, targets) -> loss, trainable count)
# --------------------------------------------------------------------------

def setup(method, model, lr, seed):
    c, P = model.c, model.P
    if method == "full":
        for t in P.values():
            t.requires_grad_(True)
        opt = torch.optim.AdamW(list(P.values()), lr=lr, **ADAMW)
        return backprop_step(model, opt, False), sum(t.numel() for t in P.values())
    if method in ("lora", "gc"):
        g = torch.Generator().manual_seed(seed + 1)
        params = []
        for i in range(c["layers"]):
            for kind in LORA_TARGETS:
                n_in, n_out = lora_in_out(c, kind)
                bound = 1.0 / math.sqrt(n_in)  # PEFT: kaiming_uniform_(a=sqrt(5)) on A; B = 0
                A = torch.empty(LORA_RANK, n_in).uniform_(-bound, bound, generator=g).requires_grad_(True)
                B = torch.zeros(n_out, LORA_RANK, requires_grad=True)
                model.lora[(i, kind)] = (A, B, LORA_ALPHA / LORA_RANK)
                params += [A, B]
        opt = torch.optim.AdamW(params, lr=lr, **ADAMW)
        return backprop_step(model, opt, method == "gc"), sum(t.numel() for t in params)
    if method == "mezo":
        return mezo_step(model, list(P.values()), lr, seed), sum(t.numel() for t in P.values())
    fail("no PyTorch implementation of method '%s' (full, lora, gc, mezo)" % method)


def backprop_step(model, opt, checkpoint):
    def step(tokens, targets):
        opt.zero_grad(set_to_none=True)
        loss = model.loss(tokens, targets, checkpoint)
        loss.backward()
        opt.step()
        return float(loss)
    return step


def mezo_step(model, params, lr, seed):
    """MeZO (Malladi et al., 2023), the paper's trainer: z regenerated from
    the step's seed for each of the four sweeps (θ+εz, θ−2εz, θ+εz, update),
    forwards in no-grad mode; the sweeps here are in place."""
    seeds = torch.Generator().manual_seed(seed)

    def perturb(step_seed, scale):
        g = torch.Generator().manual_seed(step_seed)
        for p in params:
            p.add_(torch.randn(p.shape, generator=g), alpha=scale)

    def step(tokens, targets):
        step_seed = int(torch.randint(0, 2 ** 62, (1,), generator=seeds))
        with torch.no_grad():
            perturb(step_seed, MEZO_EPS)
            l_plus = float(model.loss(tokens, targets))
            perturb(step_seed, -2.0 * MEZO_EPS)
            l_minus = float(model.loss(tokens, targets))
            perturb(step_seed, MEZO_EPS)
            pg = (l_plus - l_minus) / (2.0 * MEZO_EPS)
            perturb(step_seed, -lr * pg)
        return 0.5 * (l_plus + l_minus)
    return step


# --------------------------------------------------------------------------
# BLAS and threads
# --------------------------------------------------------------------------

def openblas():
    lib = ctypes.CDLL("libopenblas.so.0")  # the copy torch's libblas.so.3 already loaded
    lib.openblas_get_corename.restype = ctypes.c_char_p
    lib.openblas_get_config.restype = ctypes.c_char_p
    return lib


def blas_libraries():
    """Every BLAS-like library mapped into this process: one OpenBLAS is what
    makes the comparison fair (Debian's torch calls libblas.so.3, the
    alternatives link of OpenBLAS)."""
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1] if len(line.split()) >= 6 else ""
            base = os.path.basename(path)
            if any(k in base for k in ("blas", "mkl", "lapack")):
                libs.add(os.path.realpath(path))
    return sorted(libs)


def set_threads(n):
    torch.set_num_threads(n)
    lib = openblas()
    lib.openblas_set_num_threads(n)
    return lib


def blas_info(lib):
    return dict(core=lib.openblas_get_corename().decode(), config=lib.openblas_get_config().decode().strip(),
                openblas_threads=lib.openblas_get_num_threads(), torch_threads=torch.get_num_threads(),
                libraries=blas_libraries(), torch_version=torch.__version__,
                omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", ""))


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------

def random_batch(c, cell, seed):
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(0, c["vocab"], (cell["batch"], cell["seq"] + 1), generator=g)
    return seq[:, :-1].contiguous(), seq[:, 1:].contiguous()


def cmd_time(record, method):
    c, cell = load_record(record)
    lib = set_threads(cell["threads"])
    rss_base = status_bytes("VmRSS")
    model = Decoder(c, make_params(c, cell["seed"]), cell["seq"])
    step, trainable = setup(method, model, cell["lr"], cell["seed"])
    rss_model = status_bytes("VmRSS")
    times, losses = [], []
    for i in range(cell["warmup"] + cell["steps"]):
        tokens, targets = random_batch(c, cell, cell["seed"] * 1000 + i)
        t0 = time.perf_counter()
        losses.append(step(tokens, targets))
        times.append(time.perf_counter() - t0)
    out = dict(method=method, model=c["name"], step_seconds_all=times, warmup=cell["warmup"],
               loss_per_step=losses, trainable_params=trainable, rss_baseline_bytes=rss_base,
               rss_after_init_bytes=rss_model, peak_rss_bytes=status_bytes("VmHWM"), blas=blas_info(lib))
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


def write_checkpoint(c, P, d):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(ref.hf_config(c), f, indent=2)
        f.write("\n")
    header, off, names = {"__metadata__": {"format": "pt"}}, 0, [n for n, _ in ref.param_shapes(c)]
    for n in names:
        nbytes = P[n].numel() * 4
        header[n] = {"dtype": "F32", "shape": list(P[n].shape), "data_offsets": [off, off + nbytes]}
        off += nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(os.path.join(d, "model.safetensors"), "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for n in names:
            f.write(P[n].contiguous().numpy().tobytes())  # little-endian float32 on this platform


def cmd_check(record, d, methods):
    """The same weights and tokens for both sides: ftbench then runs each
    method with --checkpoint DIR --dataset DIR/tokens.bin.  Batch i of the
    token file is the window of T+1 tokens from i*T (docs/HARNESS.md)."""
    c, cell = load_record(record)
    set_threads(cell["threads"])
    T, n_steps = cell["seq"], cell["warmup"] + cell["steps"]
    write_checkpoint(c, make_params(c, cell["seed"]), d)
    g = torch.Generator().manual_seed(cell["seed"] + 17)
    ids = torch.randint(0, c["vocab"], (n_steps * T + 1,), generator=g, dtype=torch.int32)
    with open(os.path.join(d, "tokens.bin"), "wb") as f:
        f.write(ids.numpy().astype("<i4").tobytes())
    ids = ids.to(torch.int64)
    out = {}
    for m in methods:
        P = {n: t.clone() for n, t in make_params(c, cell["seed"]).items()}
        model = Decoder(c, P, T)
        step, trainable = setup(m, model, cell["lr"], cell["seed"])
        out[m] = dict(loss_per_step=[step(ids[i * T:(i + 1) * T][None], ids[i * T + 1:(i + 1) * T + 1][None])
                                     for i in range(n_steps)], trainable_params=trainable)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


def main(argv):
    if len(argv) == 3 and argv[0] == "time":
        cmd_time(argv[1], argv[2])
    elif len(argv) == 4 and argv[0] == "check":
        cmd_check(argv[1], argv[2], argv[3].split(","))
    else:
        fail("usage: torch_decoder.py time RECORD METHOD | check RECORD DIR METHOD[,METHOD...]")


if __name__ == "__main__":
    main(sys.argv[1:])
