"""The plots, drawn from the merged table with matplotlib."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .stats import NUMPY, encodings, stats

# One colour per format family on every plot; the article's own methods in their family's colour,
# muted (light, crosses); npy, the raw-array limit, as a thin black reference line.
COLORS = {"disk": "tab:blue", "lmdb": "tab:orange", "hdf5": "tab:green", "npy": "black", "zarr": "tab:purple",
          "tar": "tab:brown", "parquet": "tab:red", "sqlite": "tab:cyan", "lance": "tab:olive"}
STYLES = {"warm": "-", "cold": "--", "none": "-"}
LIMIT = "npy"


# A backend label's encoding (lmdb.jpeg) by its marker, in its family's colour.
MARKERS = {"raw": "o", "png": "s", "jpeg": "^", "source": "D"}


def color(backend: str) -> str:
    return COLORS.get(backend.partition(".")[0].removeprefix("article-"), "tab:gray")


def style(backend: str) -> dict:
    """Matplotlib keywords for a backend's line."""
    if backend == LIMIT:
        return dict(color="black", lw=0.9, marker=None, alpha=1, zorder=5)
    if backend.startswith("article-"):
        return dict(color=color(backend), lw=1.2, marker="x", ms=5, alpha=0.5, zorder=2)
    encoding = backend.partition(".")[2]
    return dict(color=color(backend), lw=1.8, marker=MARKERS.get(encoding, "o"), ms=4, alpha=1, zorder=3)


def label(backend: str, client=None) -> str:
    if client == "stock":
        return f"{backend} (its own library)"
    return "npy (the raw-array limit)" if backend == LIMIT else backend


def client_style(backend: str, client) -> dict:
    """A backend's line; read by its own library (the stock client): thinner, hollow markers."""
    st = style(backend)
    if client == "stock":
        st.update(lw=1.0, mfc="white", alpha=0.8, zorder=4)
    return st


def _lines(ax, s: pd.DataFrame, y: str = "median", band=("lo", "hi")):
    s = s.assign(client=s["client"].fillna("imgbench")) if "client" in s else s.assign(client="imgbench")
    for (backend, client, cache), part in s.groupby(["backend", "client", "cache"], sort=False):
        part = part.sort_values("n")
        dash = ":" if client == "stock" else STYLES.get(cache, "-")
        ax.plot(part["n"], part[y], dash, label=label(backend, client), **client_style(backend, client))
        if band and backend != LIMIT and client != "stock":
            ax.fill_between(part["n"], part[band[0]], part[band[1]], color=color(backend), alpha=0.15, lw=0)


def _axes(ax, title, ylabel, legend=True):
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("number of images")
    ax.set_ylabel(ylabel)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    if legend:
        _legend(ax)


def _legend(ax):
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plots(df: pd.DataFrame, outdir) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    s_all = stats(df)
    df = df[df["backend"] != NUMPY]  # the tables' reference; on the plots, the npy backend is the limit line
    s = stats(df)
    where = f"{df['dataset'].iloc[0]}, {df['host'].iloc[0]}, median of {int(s['repeats'].max())} repeats"

    fig, ax = plt.subplots(figsize=(9, 4.8))
    _lines(ax, s[s["experiment"] == "store_many"])
    _axes(ax, f"Storing many images ({where})", "seconds (median, band: min–max)")
    _save(fig, outdir / "store_many.png")
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    rm = s[s["experiment"] == "read_many"]
    for ax, cache in zip(axes, ("warm", "cold")):
        _lines(ax, rm[rm["cache"] == cache])
        _axes(ax, f"{cache} page cache", "seconds (median, band: min–max)", legend=False)
    _legend(axes[-1])
    fig.suptitle(f"Reading a whole store back ({where})", fontsize=10)
    _save(fig, outdir / "read_many.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(11, 4.8))
    single = s[s["experiment"].isin(["store_single", "read_single"])].copy()
    single["what"] = single["experiment"].str.replace("_single", "") + np.where(
        single["cache"] == "none", "", " (" + single["cache"] + ")")
    whats = list(dict.fromkeys(single["what"]))
    backends_ = list(dict.fromkeys(single["backend"]))
    width = 0.8 / max(1, len(backends_))
    for k, b in enumerate(backends_):
        part = single[single["backend"] == b].set_index("what").reindex(whats)
        x = np.arange(len(whats)) + k * width
        err = [part["median"] - part["lo"], part["hi"] - part["median"]]
        article = b.startswith("article-")
        ax.bar(x, part["median"] * 1e3, width, yerr=np.array(err) * 1e3, capsize=2, color=color(b),
               alpha=0.45 if article else 1, hatch="//" if article else None, label=label(b))
    ax.set_xticks(np.arange(len(whats)) + width * (len(backends_) - 1) / 2, whats)
    ax.set_yscale("log")
    ax.set_ylabel("milliseconds (median, bars: min–max)")
    ax.set_title(f"One image: store and read ({where})", fontsize=10)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    _legend(ax)
    _save(fig, outdir / "single.png")
    plt.close(fig)

    _epoch_plot(plt, s, outdir / "epoch.png", where)
    _latency_plot(plt, s, outdir / "latency.png", where)
    _encodings_plot(plt, s_all, outdir / "encodings.png", where)
    _tiers_plot(plt, df, outdir / "tiers.png", where)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    st = s[s["experiment"] == "store_many"].copy()
    n = np.array(sorted(set(st["n"])))
    for ax, col, what in zip(axes, ("bytes_apparent", "bytes_allocated"), ("file sizes", "allocated blocks")):
        for b, part in st.groupby("backend", sort=False):
            part = part.sort_values("n")
            ax.plot(part["n"], part[col] / 1e6, "-", label=label(b), **style(b))
        if len(n):
            ax.plot(n, n * df["image_bytes"].iloc[0] / 1e6, color="grey", lw=4, alpha=0.3, label="raw pixels")
        _axes(ax, what, "MB on disk", legend=False)
    _legend(axes[-1])
    fig.suptitle(f"Disk usage ({df['dataset'].iloc[0]})", fontsize=10)
    _save(fig, outdir / "disk_usage.png")
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for ax, exp in zip(axes, ["store_many", "read_many"]):
        part = s[(s["experiment"] == exp) & (s["cache"] != "cold")].copy()
        part["peak_mb"] = part["peak_rss"] / 2**20
        _lines(ax, part, y="peak_mb", band=None)
        _axes(ax, exp.replace("_", " ") + (" (warm)" if exp == "read_many" else ""),
              "peak resident memory of the process (MB)", legend=False)
    _legend(axes[-1])
    fig.suptitle(f"Peak memory while storing and reading ({where})", fontsize=10)
    _save(fig, outdir / "memory.png")
    plt.close(fig)


# The epoch plot's panels: who reads, through what.
EPOCH_PANELS = [("imgbench", "imgbench", "imgbench's reader, imgbench's loader"),
                ("imgbench", "torch-batch", "imgbench's reader, PyTorch DataLoader"),
                ("stock", "torch-batch", "the format's own library, PyTorch DataLoader")]


def _epoch_plot(plt, s: pd.DataFrame, path: Path, where: str) -> None:
    """Shuffled epochs against worker count: a panel per (client, loader) measured, warm and cold."""
    ep = s[(s["experiment"] == "epoch") & (s["order"] == "shuffled")]
    caches = [c for c in ("warm", "cold") if c in set(ep["cache"])] or ["warm"]
    panels = [p for p in EPOCH_PANELS if not ep[(ep["client"] == p[0]) & (ep["loader"] == p[1])].empty]
    panels = panels or EPOCH_PANELS[:1]
    fig, axes = plt.subplots(len(caches), len(panels), figsize=(4.6 * len(panels) + 2, 3.6 * len(caches)),
                             sharey=True, sharex=True, squeeze=False)
    workers = sorted(set(ep["workers"].dropna().astype(int))) or [0]
    for i, cache in enumerate(caches):
        for j, (client, loader, title) in enumerate(panels):
            ax = axes[i][j]
            part = ep[(ep["cache"] == cache) & (ep["client"] == client) & (ep["loader"] == loader)]
            for backend, line in part.groupby("backend", sort=False):
                line = line.sort_values("workers")
                x = [workers.index(int(w)) for w in line["workers"]]
                ax.errorbar(x, line["images_per_s"], yerr=[line["images_per_s"] - line["ips_lo"],
                                                          line["ips_hi"] - line["images_per_s"]],
                            capsize=2, label=label(backend), **style(backend))
            ax.set_xticks(range(len(workers)), [str(w) for w in workers])
            ax.set_yscale("log")
            ax.set_title(f"{title}\n{cache} page cache", fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
            if i == len(caches) - 1:
                ax.set_xlabel("worker processes (0: the main process reads)")
            if j == 0:
                ax.set_ylabel("images per second")
    _legend(axes[0][-1])
    batch = int(ep["batch_size"].iloc[0]) if not ep.empty else 0
    n = int(ep["n"].iloc[0]) if not ep.empty else 0
    fig.suptitle(f"Shuffled epochs of the {n:,}-image store in batches of {batch}; a pass is the whole epoch or "
                 f"what epoch.seconds allows\n(median, bars: min–max; {where}; sequential passes: in the tables)",
                 fontsize=10)
    _save(fig, path)
    plt.close(fig)


def _latency_plot(plt, s: pd.DataFrame, path: Path, where: str) -> None:
    rr = s[s["experiment"] == "random_read"]
    fig, ax = plt.subplots(figsize=(10, 4.8))
    names = list(dict.fromkeys(rr["backend"]))
    # per backend: imgbench's reader warm and cold, then its own library's (hollow diamonds)
    places = ((-0.27, "imgbench", "warm", "o"), (-0.09, "imgbench", "cold", "s"), (0.09, "stock", "warm", "D"),
              (0.27, "stock", "cold", "d"))
    for k, b in enumerate(names):
        for dx, client, cache, marker in places:
            r = rr[(rr["backend"] == b) & (rr["cache"] == cache) & (rr["client"] == client)]
            if r.empty:
                continue
            r = r.iloc[0]
            us = r[["p50_ms", "p95_ms", "p99_ms"]].to_numpy(float) * 1e3
            muted = 0.5 if b.startswith("article-") else 1
            ax.vlines(k + dx, us[0], us[2], color=color(b), lw=2, alpha=0.6 * muted)
            ax.plot(k + dx, us[0], marker, color=color(b), ms=7, alpha=muted,
                    mfc="white" if cache == "cold" else color(b))
            ax.plot(k + dx, us[1], "_", color=color(b), ms=10)
    limit = rr[(rr["backend"] == LIMIT) & (rr["cache"] == "warm") & (rr["client"] == "imgbench")]
    if not limit.empty:
        ax.axhline(limit["p50_ms"].iloc[0] * 1e3, color="black", lw=0.8, ls=":", label="npy warm p50 (the limit)")
    for _, client, cache, marker in places:
        who = "imgbench's reader" if client == "imgbench" else "its own library"
        ax.plot([], [], marker, color="grey", mfc="white" if cache == "cold" else "grey",
                label=f"{who}, {cache}: p50 (line up to p99, tick: p95)")
    ax.set_xticks(range(len(names)), names, rotation=30 if len(names) > 5 else 0)
    ax.set_yscale("log")
    ax.set_ylabel("microseconds per image")
    k = int(rr["k"].iloc[0]) if not rr.empty else 0
    ax.set_title(f"Random single-image reads through an open reader\n({k:,} per repeat; {where})", fontsize=10)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    _legend(ax)
    _save(fig, path)
    plt.close(fig)


def _encodings_plot(plt, s: pd.DataFrame, path: Path, where: str) -> None:
    """Bytes on disk per image against warm read speed, one point per backend and encoding (colour:
    the format family, marker: the encoding), and above each of our encoded stores a tick at
    Pillow alone decoding the same bytes from memory."""
    e = encodings(s)
    fig, ax = plt.subplots(figsize=(10, 5.2))
    for _, r in e.iterrows():
        st = style(r["backend"])
        marker = MARKERS.get(r["encoding"].partition("-")[0], "o")  # what it keeps, whatever its label says
        name = r["backend"] if "." in r["backend"] or r["encoding"] == "raw" else f"{r['backend']} ({r['encoding']})"
        ax.plot(r["bytes_per_image"], r["read_ips"], marker, color=st["color"], ms=8, alpha=st["alpha"],
                mfc="white" if r["backend"].startswith("article-") else st["color"], label=name)
        if r["decode_ips"] == r["decode_ips"]:  # the limit of this read, above (or below) it
            ax.plot([r["bytes_per_image"]] * 2, [r["read_ips"], r["decode_ips"]], ":", color=st["color"], lw=1)
            ax.plot(r["bytes_per_image"], r["decode_ips"], "_", color=st["color"], ms=12, mew=1.5)
    if not e.empty:
        px = e["pixels_per_image"].median()
        ax.axvline(px, color="grey", lw=4, alpha=0.3)
        ax.text(px, 0.02, "raw pixels ", transform=ax.get_xaxis_transform(), fontsize=7, rotation=90,
                va="bottom", ha="right")
        ax.plot([], [], "_", color="grey", ms=12, mew=1.5, label="Pillow alone on the same bytes")
        n = int(s.loc[s["experiment"] == "store_many", "n"].max())
        ax.set_title(f"Bytes per image on disk against warm read speed, n = {n:,}\n({where})", fontsize=10)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("bytes on disk per image (store_many, largest n)")
    ax.set_ylabel("images per second (read_many, warm)")
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax)
    _save(fig, path)
    plt.close(fig)


def _tiers_plot(plt, df: pd.DataFrame, path: Path, where: str) -> None:
    """A panel per question read in the storage tiers; per backend, a bar per tier (each cold;
    local: the run's own warm reads of the largest store), images/s of imgbench's reader."""
    from . import tiers

    r = tiers.rows(df)
    questions = [q for q in tiers.QUESTIONS if not r.empty
                 and not tiers.best(r[r["tier"] != tiers.LOCAL], q[0], q[1]).empty]
    if not questions:  # no tier in this run: say so where the plot would be
        fig, ax = plt.subplots(figsize=(8, 2.4))
        ax.axis("off")
        ax.text(0.5, 0.5, "No storage tier was read in this run (config: storage.tiers; docs/storage.md)",
                ha="center", va="center", fontsize=11)
        _save(fig, path)
        plt.close(fig)
        return
    names = [t for t in dict.fromkeys(r["tier"])]
    names = [tiers.LOCAL] * (tiers.LOCAL in names) + [t for t in names if t != tiers.LOCAL]
    fig, axes = plt.subplots(len(questions), 1, figsize=(11, 3.4 * len(questions)), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ax, (exp, order, what) in zip(axes[:, 0], questions):
        b = tiers.best(r, exp, order)
        backends_ = [x for x in dict.fromkeys(b[b["tier"] != tiers.LOCAL]["backend"])]
        width = 0.8 / len(names)
        for k, tier in enumerate(names):
            part = b[b["tier"] == tier].set_index("backend").reindex(backends_)
            x = np.arange(len(backends_)) + k * width
            err = [part["images_per_s"] - part["lo"], part["hi"] - part["images_per_s"]]
            ax.bar(x, part["images_per_s"], width, yerr=err, capsize=2,
                   label="local (in memory, warm)" if tier == tiers.LOCAL else f"{tier} (cold)",
                   color="lightgrey" if tier == tiers.LOCAL else cmap(0.15 + 0.7 * k / max(1, len(names) - 1)))
        ax.set_xticks(np.arange(len(backends_)) + width * (len(names) - 1) / 2, backends_)
        ax.set_yscale("log")
        ax.set_ylabel("images per second")
        ax.set_title(f"{what[0].upper()}{what[1:]}", fontsize=9)
        ax.grid(True, axis="y", which="both", alpha=0.3)
    axes[0, 0].legend(title="tier", fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle(f"The largest store read where datasets live: each storage tier (median, bars: min–max; "
                 f"imgbench's reader; epochs: the fastest loader and worker count)\n({where})", fontsize=10)
    _save(fig, path)
    plt.close(fig)
