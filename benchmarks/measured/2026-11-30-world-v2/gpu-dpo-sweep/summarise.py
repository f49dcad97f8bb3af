"""Summarise a sweep's result.json files: one row per run, then means per config over seeds."""
import json, glob, sys, collections, statistics as st
root = sys.argv[1]; out = sys.argv[2] if len(sys.argv) > 2 else None
rows = []
for f in glob.glob(f"{root}/**/result.json", recursive=True):
    d = json.load(open(f)); c = d["config"]; v = d["scorers"]["gold"]["vs_base"]; a = d["attributes"]
    b = c["backbone"]["name"] if isinstance(c["backbone"], dict) else c["backbone"]
    rows.append(dict(bb=b, seed=c["seed"], method=c["method"]["name"], beta=c["method"].get("beta"),
                     lr=c["train"]["lr"], steps=c["train"]["steps"], split=c["eval"]["split"],
                     win=v["win_rate"], lo=v["ci_low"], hi=v["ci_high"], n=v["wins"] + v["ties"] + v["losses"],
                     fc_base=a["base"]["fully_correct"], fc=a["model"]["fully_correct"],
                     framed_base=a["base"]["framed"], framed=a["model"]["framed"],
                     extra_base=a["base"]["extra_object"], extra=a["model"]["extra_object"],
                     wall=d["wall_s"]["total"], device=d.get("training", {}).get("device")))
rows.sort(key=lambda r: (r["bb"], r["method"], r["beta"] or 0, r["lr"], r["steps"], r["seed"]))
for r in rows:
    print(f"{r['bb']:10s} {r['method']:5s} b={r['beta']} lr={r['lr']:g} st={r['steps']} s={r['seed']} "
          f"win={r['win']:.3f} [{r['lo']:.3f},{r['hi']:.3f}] n={r['n']} fc {r['fc_base']:.3f}->{r['fc']:.3f} "
          f"framed {r['framed_base']:.3f}->{r['framed']:.3f} extra {r['extra_base']:.3f}->{r['extra']:.3f} {r['wall']:.0f}s")
g = collections.defaultdict(list)
for r in rows: g[(r["bb"], r["method"], r["beta"], r["lr"], r["steps"])].append(r["win"])
print("\nmean over seeds")
for k, w in sorted(g.items(), key=lambda kv: (kv[0][0], str(kv[0][1:]))):
    print(*k, f"n_seeds={len(w)} mean={st.mean(w):.3f} min={min(w):.3f} max={max(w):.3f}")
if out: json.dump(rows, open(out, "w"), indent=1)
