"""Merge the jobs' timing CSVs, summarise them, and draw the plots. Reads only the merged table."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

ORDER = ["store_many", "read_many", "store_single", "read_single"]
KEYS = ["experiment", "backend", "n", "cache"]


def merge(paths, out) -> pd.DataFrame:
    df = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    from .backends import names

    known = names()
    order = {"experiment": ORDER, "backend": known + sorted(set(df["backend"]) - set(known)),
             "cache": ["none", "warm", "cold"]}
    for col, cats in order.items():
        df[col] = pd.Categorical(df[col], cats, ordered=True)
    df = df.sort_values(KEYS + ["repeat"]).reset_index(drop=True)
    for col in order:
        df[col] = df[col].astype(str)
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    df.to_csv(tmp, index=False)
    tmp.replace(out)
    return df


def stats(df: pd.DataFrame) -> pd.DataFrame:
    """One row per experiment, backend, n and cache: median and range of the repeats."""
    d = df.assign(extra_rss=df["peak_rss_bytes"] - df["rss_before_bytes"])
    g = d.groupby(KEYS, sort=False)
    s = g.agg(median=("seconds", "median"), lo=("seconds", "min"), hi=("seconds", "max"),
              repeats=("seconds", "size"), bytes_apparent=("bytes_apparent", "median"),
              bytes_allocated=("bytes_allocated", "median"), files=("files", "median"),
              peak_rss=("peak_rss_bytes", "median"), extra_rss=("extra_rss", "median"),
              verified=("verified", "all")).reset_index()
    s["images_per_s"] = s["n"] / s["median"]
    return s


def _fmt_s(x: float) -> str:
    return f"{x * 1e3:.2f} ms" if x < 1 else f"{x:.2f} s"


def summary(df: pd.DataFrame, out, config: dict | None = None) -> None:
    s = stats(df)
    m = df.iloc[0]
    lines = [f"# imgbench results: {m['dataset']}", "",
             f"Machine: {m['host']}, {m['cpu']}, {m['cores']} cores; file system {m['filesystem']}; "
             f"Python {m['python']}, numpy {m['numpy']}, Pillow {m['pillow']}, lmdb {m['lmdb']}, "
             f"h5py {m['h5py']} (HDF5 {m['hdf5']}), imgbench {m['imgbench']}.", "",
             "Seconds are the median of the repeats with (min–max). Stores end when the files are "
             "closed (no fsync); *warm* reads follow an untimed read, *cold* reads follow evicting the "
             "store's files from the page cache. Every read was compared with the source. Peak memory is "
             "the process's peak resident set during the call; *+MB* is that peak minus the resident set "
             "just before the call (the disk backend's forked worker processes are not included).",
             ""]
    if len(set(df["host"])) > 1:
        lines += [f"**Note**: measured on {len(set(df['host']))} different hosts "
                  f"({', '.join(sorted(set(df['host'])))}); compare rows only within one host.", ""]
    for exp in ORDER:
        part = s[s["experiment"] == exp]
        if part.empty:
            continue
        lines += [f"## {exp}", "", "| backend | n | cache | seconds (min–max) | images/s | MB on disk "
                  "(allocated) | files | peak MB (+MB) | verified |", "|---|---:|---|---|---:|---:|---:|---:|---|"]
        for _, r in part.iterrows():
            lines.append(
                f"| {r['backend']} | {r['n']:,} | {r['cache']} | {_fmt_s(r['median'])} "
                f"({_fmt_s(r['lo'])}–{_fmt_s(r['hi'])}) | {r['images_per_s']:,.0f} | "
                f"{r['bytes_apparent'] / 1e6:,.2f} ({r['bytes_allocated'] / 1e6:,.2f}) | {int(r['files']):,} | "
                f"{r['peak_rss'] / 2**20:,.0f} (+{r['extra_rss'] / 2**20:,.0f}) | "
                f"{'yes' if r['verified'] else 'NO'} |")
        lines.append("")
    if config is not None:
        import yaml

        lines += ["## Configuration", "", "```yaml", yaml.safe_dump(config, sort_keys=False).strip(), "```", ""]
    Path(out).write_text("\n".join(lines))


# ------------------------------------------------------------------ plots

COLORS = {"disk": "tab:blue", "lmdb": "tab:orange", "hdf5": "tab:green"}
STYLES = {"warm": "-", "cold": "--", "none": "-"}


def _lines(ax, s: pd.DataFrame, y: str = "median", band=("lo", "hi"), label_cache: bool = False):
    for (backend, cache), part in s.groupby(["backend", "cache"], sort=False):
        part = part.sort_values("n")
        label = f"{backend} ({cache})" if label_cache else backend
        ax.plot(part["n"], part[y], STYLES.get(cache, "-"), marker="o", ms=4, color=COLORS.get(backend), label=label)
        if band:
            ax.fill_between(part["n"], part[band[0]], part[band[1]], color=COLORS.get(backend), alpha=0.2, lw=0)


def _axes(ax, title, ylabel):
    ax.set_title(title)
    ax.set_xlabel("number of images")
    ax.set_ylabel(ylabel)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plots(df: pd.DataFrame, outdir) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    s = stats(df)
    where = f"{df['dataset'].iloc[0]}, {df['host'].iloc[0]}, median of {int(s['repeats'].max())} repeats"

    fig, ax = plt.subplots(figsize=(7, 4.5))
    _lines(ax, s[s["experiment"] == "store_many"])
    _axes(ax, f"Storing many images ({where})", "seconds (median, band: min–max)")
    _save(fig, outdir / "store_many.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    _lines(ax, s[s["experiment"] == "read_many"], label_cache=True)
    _axes(ax, f"Reading many images ({where})", "seconds (median, band: min–max)")
    ax.text(0.01, 0.01, "solid: warm page cache, dashed: cold", transform=ax.transAxes, fontsize=8, va="bottom")
    _save(fig, outdir / "read_many.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
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
        ax.bar(x, part["median"] * 1e3, width, yerr=np.array(err) * 1e3, capsize=3, color=COLORS.get(b), label=b)
    ax.set_xticks(np.arange(len(whats)) + width * (len(backends_) - 1) / 2, whats)
    ax.set_yscale("log")
    ax.set_ylabel("milliseconds (median, bars: min–max)")
    ax.set_title(f"One image: store and read ({where})")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend()
    _save(fig, outdir / "single.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    st = s[s["experiment"] == "store_many"].copy()
    for b, part in st.groupby("backend", sort=False):
        part = part.sort_values("n")
        ax.plot(part["n"], part["bytes_apparent"] / 1e6, "-", marker="o", ms=4, color=COLORS.get(b), label=f"{b} (file sizes)")
        ax.plot(part["n"], part["bytes_allocated"] / 1e6, ":", color=COLORS.get(b), label=f"{b} (allocated blocks)")
    if not st.empty:
        n = np.array(sorted(set(st["n"])))
        ax.plot(n, n * df["image_bytes"].iloc[0] / 1e6, color="grey", lw=1, label="raw pixels")
    _axes(ax, f"Disk usage ({df['dataset'].iloc[0]})", "MB on disk")
    _save(fig, outdir / "disk_usage.png")
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), sharey=True)
    for ax, exp in zip(axes, ["store_many", "read_many"]):
        part = s[s["experiment"] == exp].copy()
        part["peak_mb"] = part["peak_rss"] / 2**20
        _lines(ax, part, y="peak_mb", band=None, label_cache=exp == "read_many")
        _axes(ax, exp.replace("_", " "), "peak resident memory of the process (MB)")
    fig.suptitle(f"Peak memory while storing and reading ({where})")
    _save(fig, outdir / "memory.png")
    plt.close(fig)

