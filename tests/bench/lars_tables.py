#!/usr/bin/python3
"""Markdown tables of docs/methods/lars.md from `ftbench run` records.

Usage: lars_tables.py curves RESULTS.jsonl...   memory against length, slopes
                                                 against the formulas, LARS's
                                                 reduction against both LoRAs
       lars_tables.py speed RESULTS.jsonl...    tokens/s (median step)
A later record of the same (model, method, options, seq) replaces an
earlier one; cells that did not end "ok" are listed at the end."""
import collections, json, math, sys

# D, Q (attention width), F, L of the zoo shapes measured (models/zoo.c)
ZOO = {"smollm2-135m": (576, 576, 1536, 30), "qwen2.5-0.5b": (896, 896, 4864, 24),
       "llama-3.2-1b": (2048, 2048, 8192, 16)}
ORDER = ["pooled", "gated", "lora", "lora-dropout"]
HEAD = "| seq | lars pooled | lars gated | lora | lora dropout 0.05 |\n|---|---|---|---|---|"
MiB = 1048576


def label(r):
    o = r["method"]["options"]
    if r["method"]["name"] == "lars":
        return "gated" if o.get("variant") == "gated" else "pooled"
    return "lora-dropout" if float(o.get("dropout", 0)) > 0 else "lora"


def load(files):
    rows, bad = collections.defaultdict(dict), []
    for f in files:
        for line in open(f):
            r = json.loads(line)
            if r["method"]["name"] not in ("lars", "lora"):
                continue
            key = (r["model"]["name"], label(r))
            if r["outcome"] != "ok":
                bad.append("%s %s %d: %s" % (key[0], key[1], r["seq"], r["outcome"]))
                continue
            m = r["memory"]
            rows[key][r["seq"]] = dict(rss=m["peak_rss_bytes"], saved=m["core"]["peak_bytes"]["saved_activations"],
                                       tps=r["timing"]["tokens_per_second"])
    return rows, bad


def slope(d, key):
    xs = sorted(d)
    if len(xs) < 2:
        return None
    ys = [d[x][key] for x in xs]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def formula_extra(model, meth, r=8):
    """Saved bytes per token above the pooled variant's (the frozen base's)."""
    D, Q, F, L = ZOO[model]
    ins = [D, D, D, Q, D, D, F]
    if meth == "pooled":
        return 0
    if meth == "lora":
        return L * (4 * (2 * D + F) + 28 * r)
    if meth == "lora-dropout":
        return L * (5 * sum(ins) + 28 * r)
    return L * (4 * (2 * D + F) + sum(4 * (1 + r + math.ceil(i / 32)) for i in ins))


def fmt(v):
    return "—" if v is None else "{:,}".format(int(round(v))).replace(",", " ")


def curves(rows):
    for model in ZOO:
        if not any((model, m) in rows for m in ORDER):
            continue
        seqs = sorted({s for m in ORDER for s in rows.get((model, m), {})})
        cell = lambda m, s: rows.get((model, m), {}).get(s)
        print("\n**%s** — peak RSS / saved-activation peak, MiB\n\n%s" % (model, HEAD))
        for s in seqs:
            print("| %d | %s |" % (s, " | ".join("%.1f / %.1f" % (c["rss"] / MiB, c["saved"] / MiB)
                                                 if (c := cell(m, s)) else "—" for m in ORDER)))
        sl = lambda m, k: slope(rows.get((model, m), {}), k)
        print("| slope, peak RSS (bytes/token) | %s |" % " | ".join(fmt(sl(m, "rss")) for m in ORDER))
        print("| slope, saved (bytes/token) | %s |" % " | ".join(fmt(sl(m, "saved")) for m in ORDER))
        base = sl("pooled", "saved")
        if base is not None:
            print("| saved slope − pooled's, measured / formula | %s |" % " | ".join(
                "%s / %s" % (fmt(sl(m, "saved") - base), fmt(formula_extra(model, m)))
                if sl(m, "saved") is not None else "—" for m in ORDER))
        print("\nReduction of peak RSS (of saved activations) by LARS; the paper: 51.95 % (CPU average)\n")
        print("| seq | pooled vs lora | pooled vs lora dropout | gated vs lora | gated vs lora dropout |")
        print("|---|---|---|---|---|")
        for s in seqs:
            out = []
            for a in ("pooled", "gated"):
                for b in ("lora", "lora-dropout"):
                    A, B = cell(a, s), cell(b, s)
                    out.append("%.1f %% (%.1f %%)" % (100 * (1 - A["rss"] / B["rss"]), 100 * (1 - A["saved"] / B["saved"]))
                               if A and B else "—")
            print("| %d | %s |" % (s, " | ".join(out)))


def speed(rows):
    for model in ZOO:
        if not any((model, m) in rows for m in ORDER):
            continue
        seqs = sorted({s for m in ORDER for s in rows.get((model, m), {})})
        print("\n**%s** — tokens/s (median of the measured steps)\n\n%s" % (model, HEAD))
        for s in seqs:
            print("| %d | %s |" % (s, " | ".join("%.1f" % c["tps"] if (c := rows.get((model, m), {}).get(s)) else "—"
                                                 for m in ORDER)))
        print("| relative to lora, mean over lengths | %s |" % " | ".join(
            "%.2f×" % (sum(rows[(model, m)][s]["tps"] / rows[(model, "lora")][s]["tps"] for s in common) / len(common))
            if (common := [s for s in seqs if s in rows.get((model, m), {}) and s in rows.get((model, "lora"), {})])
            else "—" for m in ORDER))


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("curves", "speed"):
        sys.exit(__doc__)
    rows, bad = load(sys.argv[2:])
    (curves if sys.argv[1] == "curves" else speed)(rows)
    if bad:
        print("\nnot ok: " + "; ".join(bad))
