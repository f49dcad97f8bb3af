"""The report's figures (matplotlib/seaborn, imported on first use), each saved as PNG and PDF:
win-rate intervals per (backbone, scorer), the attribute heatmap, sensitivity curves over swept
config keys and training curves. Long configuration labels are shortened to "<method> [n]" and
spelled out in a key below the figure (short_labels), the same numbering in every figure.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.files import atomic
from bench.report.tables import swept_axes
from bench.results import Run, flat_identity, short_keys


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns
    sns.set_theme(style="whitegrid", context="paper")
    return plt, sns


def _save(fig, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in ("png", "pdf"):
        p = stem.with_suffix(f".{ext}")
        # no creation date in PDFs, so a regenerated report leaves committed files byte-identical
        meta = {"CreationDate": None} if ext == "pdf" else None
        with atomic(p, suffix=f".{ext}") as tmp:
            fig.savefig(tmp, dpi=130, bbox_inches="tight", metadata=meta)
        out.append(p)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return out


SHORT_LABEL = 18          # a label longer than this becomes "<method> [n]", spelled out in the figure's key


def short_labels(labels, methods) -> tuple[dict[str, str], list[str]]:
    """label -> short label, and the key lines ("[n] full label") for those that were shortened.
    Numbered in the given order, one number per distinct label, so [n] names the same
    configuration in every figure drawn from the same rows."""
    short, key = {}, []
    for label, method in zip(labels, methods):
        if label in short:
            continue
        if len(label) <= SHORT_LABEL:
            short[label] = label
        else:
            key.append(f"[{len(key) + 1}] {label}")
            short[label] = f"{method} [{len(key)}]"
    return short, key


def _family_colours(methods) -> dict[str, tuple]:
    """One colour per method family (a handful), the same in every panel."""
    import seaborn as sns
    fams = sorted(set(methods))
    return dict(zip(fams, sns.color_palette("tab10" if len(fams) <= 10 else "husl", len(fams))))


def _key_text(fig, key_lines: list[str], bottom_in: float) -> None:
    """The key of shortened labels as lines of text in the figure's bottom margin (inches from the bottom)."""
    if key_lines:
        fig.text(0.01, bottom_in / fig.get_figheight(), "\n".join(key_lines), fontsize=7, va="bottom", ha="left",
                 linespacing=1.35)


def winrate_figure(lb: pd.DataFrame, scorers: list[str]):
    """Faceted interval plot: one panel per (backbone, scorer), one row per configuration with its
    win rate vs base and 95% CI, coloured by method family (hollow: a single training seed).
    Rows are labelled with short labels and a key below, so any number of configurations stays
    readable: the figure grows downwards, never sideways, and no legend sits on the data."""
    plt, sns = _plt()
    from matplotlib.ticker import MaxNLocator
    d = lb[lb.method != "base"]
    scorers = [n for n in scorers if f"{n}_win_rate" in d and d[f"{n}_win_rate"].notna().any()]
    if d.empty or not scorers:
        return None
    backbones = sorted(d.backbone.unique())
    short, key_lines = short_labels(d.label, d.method)
    colours = _family_colours(d.method)
    counts = [int((d.backbone == bb).sum()) for bb in backbones]
    legend_h, key_h = 0.45, 0.15 * len(key_lines) + (0.1 if key_lines else 0.0)
    panels_h = sum(0.24 * c + 0.75 for c in counts) + 0.5
    longest = max(len(s) for s in short.values())
    fig = plt.figure(figsize=(0.075 * longest + 2.3 * len(scorers) + 0.6, panels_h + legend_h + key_h))
    H = fig.get_figheight()
    gs = fig.add_gridspec(len(backbones), len(scorers), height_ratios=[0.24 * c + 0.75 for c in counts])
    lows = [d[f"{n}_ci_low"].min() for n in scorers]
    highs = [d[f"{n}_ci_high"].max() for n in scorers]
    xlim = (max(0.0, min(lows + [0.5]) - 0.02), min(1.0, max(highs + [0.5]) + 0.02))
    for i, bb in enumerate(backbones):
        g = d[d.backbone == bb].reset_index(drop=True)
        first = None
        for j, n in enumerate(scorers):
            ax = fig.add_subplot(gs[i, j], sharey=first)
            first = first or ax
            for y, r in g.iterrows():
                x = r[f"{n}_win_rate"]
                if pd.isna(x):            # a run scored without this scorer has no point here
                    continue
                c = colours[r.method]
                ax.errorbar([x], [y], xerr=[[x - r[f"{n}_ci_low"]], [r[f"{n}_ci_high"] - x]], fmt="o", ms=4.5,
                            color=c, mfc=c if r.get("n_seeds", 1) > 1 else "white", capsize=2.5, lw=1.2)
            ax.axvline(0.5, ls="--", color="grey", lw=1)
            ax.set_xlim(*xlim)
            ax.set_ylim(len(g) - 0.5, -0.5)
            ax.set_yticks(range(len(g)))
            if j == 0:
                ax.set_yticklabels([short[lab] for lab in g.label], fontsize=8)
            else:
                ax.tick_params(axis="y", labelleft=False)
            ax.tick_params(axis="x", labelsize=8)
            ax.xaxis.set_major_locator(MaxNLocator(5))      # neighbouring panels' end ticks stay apart
            ax.set_title(f"{bb} · {n}", fontsize=9)
            ax.set_xlabel("win rate vs base" if i == len(backbones) - 1 else "", fontsize=8)
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], marker="o", ls="", color=c, label=m) for m, c in colours.items()]
    if (d.get("n_seeds", pd.Series([2])) <= 1).any():
        handles.append(Line2D([], [], marker="o", ls="", color="grey", mfc="white", label="1 training seed"))
    fig.suptitle("Win rate vs base, 95% CI (seed-aware over >= 2 training seeds; prompts only for 1 seed)",
                 fontsize=10)
    fig.tight_layout(rect=(0, (legend_h + key_h) / H, 1, 1))
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, (legend_h + key_h) / H), ncol=len(handles),
               fontsize=8, frameon=False, handletextpad=0.3, columnspacing=1.2)
    _key_text(fig, key_lines, 0.05)
    return fig


def fig_winrate_bars(lb: pd.DataFrame, scorers: list[str], stem: Path) -> list[Path]:
    """The win-rate figure (winrate_figure) saved as stem.png / stem.pdf."""
    fig = winrate_figure(lb, scorers)
    return [] if fig is None else _save(fig, stem)


def fig_attribute_heatmap(af: pd.DataFrame, stem: Path) -> list[Path]:
    """Method x attribute rates: positive attributes (higher is better) beside negative ones."""
    from bench.world import NEGATIVE_ATTRIBUTES, POSITIVE_ATTRIBUTES
    if af.empty:
        return []
    plt, sns = _plt()
    multi = af.backbone.nunique() > 1
    idx = [f"{b}: {l}" if multi else l for b, l in zip(af.backbone, af.label)]
    pos = [a for a in POSITIVE_ATTRIBUTES if a in af]
    neg = [a for a in NEGATIVE_ATTRIBUTES if a in af]
    panels = [(p, t, c) for p, t, c in ((pos, "positive attributes (higher is better)", "Greens"),
                                        (neg, "negative attributes (lower is better)", "Reds")) if p]
    fig, axes = plt.subplots(1, len(panels), figsize=(1.0 * (len(pos) + len(neg)) + 4, 0.45 * len(af) + 1.8),
                             squeeze=False)
    for ax, (cols, title, cmap) in zip(axes[0], panels):
        m = pd.DataFrame(af[cols].to_numpy(float), index=idx, columns=cols)
        sns.heatmap(m, annot=True, fmt=".2f", cmap=cmap, vmin=0, vmax=1, cbar=False, ax=ax,
                    annot_kws={"fontsize": 8})
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=35)
        if ax is not axes[0][0]:
            ax.set_yticklabels([])
    return _save(fig, stem)


def fig_sensitivity(lb: pd.DataFrame, runs: list[Run], scorers: list[str], outdir: Path,
                    notes: list[str] | None = None) -> list[Path]:
    """Win rate vs base against every swept numeric config key (beta, refresh interval, caption
    dropout, ...), one line per scorer, CI bars. Runs that also differ in other swept keys are
    split into one panel per combination of those keys; only combinations with >= 2 values of
    the key make a curve (a key that never varies alone gets no figure, and a note)."""
    notes = notes if notes is not None else []
    by_dir = {r.path.name: r for r in runs}
    files = []
    for (bb, method), axes_keys in sorted(swept_axes(runs).items()):
        if method == "base":
            continue
        g = lb[(lb.backbone == bb) & (lb.method == method)]
        idents = [flat_identity(by_dir[d.split(";")[0]].result) for d in g.job_dirs]
        for key in axes_keys:
            vals = [i.get(key) for i in idents]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
                continue
            others = [k for k in axes_keys if k != key]
            names = short_keys(axes_keys)
            groups: dict[str, list] = {}
            for (_, r), ident in zip(g.iterrows(), idents):
                rest = ", ".join(f"{names[k]}={ident.get(k)}" for k in others)
                groups.setdefault(rest, []).append((r, ident))
            groups = {k: v for k, v in groups.items() if len({float(i[key]) for _, i in v}) >= 2}
            if not groups:
                notes.append(f"sensitivity of {bb} / {method} to {names[key]} skipped: no two runs differ in "
                             f"{names[key]} alone")
                continue
            plt, sns = _plt()
            palette = dict(zip(scorers, sns.color_palette("tab10", len(scorers))))
            ncol = min(3, len(groups))
            nrow = -(-len(groups) // ncol)
            fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol + 1.4, 3.6 * nrow), squeeze=False)
            import textwrap
            for ax, (rest, members) in zip(axes.flat, sorted(groups.items())):
                long = pd.DataFrame([{"x": float(ident[key]), "scorer": n, "y": r[f"{n}_win_rate"],
                                      "lo": r[f"{n}_ci_low"], "hi": r[f"{n}_ci_high"]}
                                     for r, ident in members for n in scorers
                                     if f"{n}_win_rate" in r and pd.notna(r[f"{n}_win_rate"])]).sort_values("x")
                for n, sub in long.groupby("scorer", sort=False):
                    ax.errorbar(sub.x, sub.y, yerr=[sub.y - sub.lo, sub.hi - sub.y], fmt="o-", ms=4, capsize=3,
                                lw=1.2, color=palette[n], label=n)
                ax.axhline(0.5, ls="--", color="grey", lw=1)
                if long.x.min() > 0 and long.x.max() / long.x.min() >= 20:
                    ax.set_xscale("log")
                ax.set_xlabel(names[key])
                ax.set_ylabel("win rate vs base")
                ax.set_title("\n".join(textwrap.wrap(rest, 60)) if rest else "", fontsize=7)
            for ax in list(axes.flat)[len(groups):]:
                ax.set_visible(False)
            from matplotlib.lines import Line2D
            handles = [Line2D([], [], marker="o", color=c, label=n) for n, c in palette.items()]
            fig.suptitle(f"{bb} / {method}: sensitivity to {names[key]} (95% CI)", fontsize=10)
            fig.tight_layout(rect=(0, 0, 1 - 1.3 / fig.get_figwidth(), 1))
            fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(1 - 1.25 / fig.get_figwidth(), 0.9),
                       fontsize=8, frameon=False)
            files += _save(fig, outdir / f"sensitivity-{bb}-{method}-{names[key].replace('.', '_')}")
    return files


TRAIN_METRICS = ("loss", "implicit_acc", "reward_margin")


def fig_training(lb: pd.DataFrame, runs: list[Run], stem: Path) -> list[Path]:
    """Training curves (loss, implicit accuracy, reward margin) from result.json's history, one
    line per job, coloured by config: one row of panels per backbone, its legend (short labels,
    key below) beside the row, never on the curves."""
    label_of = {d: r.label for _, r in lb.iterrows() for d in r.job_dirs.split(";")}
    rows = [{"label": label_of.get(r.path.name, r.result["method"]), "method": r.result["method"], "seed": r.seed,
             "backbone": r.result["backbone"], **h}
            for r in runs for h in r.result.get("train_history") or []]
    if not rows:
        return []
    d = pd.DataFrame(rows)
    metrics = [m for m in TRAIN_METRICS if m in d and d[m].notna().any()]
    if "step" not in d or not metrics:
        return []
    plt, sns = _plt()
    order = [lab for lab in lb.label if lab in set(d.label)]
    order = list(dict.fromkeys(order + sorted(set(d.label) - set(order))))
    short, key_lines = short_labels(order, [d.method[d.label == lab].iloc[0] for lab in order])
    d["short"] = d.label.map(short)
    backbones = sorted(d.backbone.unique())
    key_h = 0.15 * len(key_lines) + (0.15 if key_lines else 0.0)
    n_lines = [d[d.backbone == bb].short.nunique() for bb in backbones]
    row_h = [max(3.0, 0.2 * n + 0.8) for n in n_lines]
    longest = max(len(s) for s in short.values())
    fig, axes = plt.subplots(len(backbones), len(metrics), squeeze=False, gridspec_kw={"height_ratios": row_h},
                             figsize=(4.0 * len(metrics) + 0.075 * longest + 1.0, sum(row_h) + 0.5 + key_h))
    for i, bb in enumerate(backbones):
        sub_bb = d[d.backbone == bb]
        hues = list(dict.fromkeys([short[lab] for lab in lb[lb.backbone == bb].label if lab in set(sub_bb.label)]
                                  + sorted(set(sub_bb.short))))
        palette = dict(zip(hues, sns.color_palette("tab10" if len(hues) <= 10 else "husl", len(hues))))
        for j, m in enumerate(metrics):
            ax = axes[i][j]
            sub = sub_bb[sub_bb[m].notna()]
            if not sub.empty:
                sns.lineplot(sub, x="step", y=m, hue="short", hue_order=hues, palette=palette, units="seed",
                             estimator=None, ax=ax, lw=1.2, legend=j == len(metrics) - 1)
            ax.set_title(f"{bb} · {m.replace('_', ' ')}", fontsize=9)
            ax.set_ylabel("")
        leg = axes[i][-1].get_legend()
        if leg is not None:
            axes[i][-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False,
                               title=None)
    fig.suptitle("training curves (one line per training seed)", fontsize=10)
    fig.tight_layout(rect=(0, (key_h + 0.05) / fig.get_figheight(), 1, 1))
    _key_text(fig, key_lines, 0.05)
    return _save(fig, stem)

