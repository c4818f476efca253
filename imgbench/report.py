"""Merge the jobs' timing CSVs, summarise them, and draw the plots. Reads only the merged table."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

ORDER = ["store_many", "read_many", "store_single", "read_single", "epoch", "random_read", "decode", "verify",
         "checksum"]
KEYS = ["experiment", "backend", "n", "cache"]
NUMPY = "numpy"  # rows of np.save / np.load of the same arrays: the limit (imgbench.experiments.LIMIT)
ACCESS_KEYS = ["order", "workers", "batch_size", "k"]  # empty outside the access-pattern experiments
LATENCY = ["p50_ms", "p95_ms", "p99_ms", "mean_ms"]


def merge(paths, out) -> pd.DataFrame:
    df = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    from .backends import names

    known = names()
    for col in ACCESS_KEYS + LATENCY + ["encoding", "psnr_db"]:
        if col not in df:
            df[col] = np.nan
    df["encoding"] = df["encoding"].astype(object).where(df["encoding"].notna(), "raw")
    if "images" not in df:  # written before the column existed: a random read reads k, the rest n
        df["images"] = np.nan
    df["images"] = df["images"].fillna(df["k"].where(df["experiment"] == "random_read", df["n"])).astype("int64")
    for col in ("workers", "batch_size", "k"):  # whole numbers, empty where they do not apply
        df[col] = df[col].astype("Int64")
    base = {b: (known.index(b.partition(".")[0]) if b.partition(".")[0] in known else len(known), b)
            for b in set(df["backend"])}
    order = {"experiment": ORDER, "backend": sorted(base, key=base.get),
             "cache": ["none", "warm", "cold", "memory"], "order": ["sequential", "shuffled"]}
    for col, cats in order.items():
        df[col] = pd.Categorical(df[col], cats, ordered=True)
    df = df.sort_values(KEYS + ["order", "workers", "repeat"]).reset_index(drop=True)
    for col in order:
        df[col] = df[col].astype(object).where(df[col].notna(), None)
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    df.to_csv(tmp, index=False)
    tmp.replace(out)
    return df


def stats(df: pd.DataFrame) -> pd.DataFrame:
    """One row per measurement (experiment, backend, n, cache and, for the access patterns, order,
    workers, batch size, k): median and range of the repeats."""
    d = df.assign(extra_rss=df["peak_rss_bytes"] - df["rss_before_bytes"])
    for col in ACCESS_KEYS + LATENCY + ["psnr_db"]:
        if col not in d:
            d[col] = np.nan
    if "encoding" not in d:
        d["encoding"] = "raw"
    if "images" not in d:
        d["images"] = np.where(d["experiment"] == "random_read", d["k"], d["n"])
    # images read (or written) per second in each repeat: a time-limited epoch counts a slice of n
    d["rate"] = d["images"] / d["seconds"]
    g = d.groupby(KEYS + ACCESS_KEYS + ["encoding"], sort=False, dropna=False)
    s = g.agg(median=("seconds", "median"), lo=("seconds", "min"), hi=("seconds", "max"),
              repeats=("seconds", "size"), bytes_apparent=("bytes_apparent", "median"),
              bytes_allocated=("bytes_allocated", "median"), files=("files", "median"),
              peak_rss=("peak_rss_bytes", "median"), extra_rss=("extra_rss", "median"),
              verified=("verified", "all"), images=("images", "median"), images_per_s=("rate", "median"),
              ips_lo=("rate", "min"), ips_hi=("rate", "max"), psnr_db=("psnr_db", "median"),
              image_bytes=("image_bytes", "median"), **{c: (c, "median") for c in LATENCY}).reset_index()
    return s


def _fmt_s(x: float) -> str:
    return f"{x * 1e3:.2f} ms" if x < 1 else f"{x:.2f} s"


def summary(df: pd.DataFrame, out, config: dict | None = None, integrity: pd.DataFrame | None = None) -> None:
    s = stats(df)
    m = df.iloc[0]
    lines = [f"# imgbench results: {m['dataset']}", "",
             f"Machine: {m['host']}, {m['cpu']}, {m['cores']} cores; file system {m['filesystem']}; "
             f"Python {m['python']}, numpy {m['numpy']}, Pillow {m['pillow']}, lmdb {m['lmdb']}, "
             f"h5py {m['h5py']} (HDF5 {m['hdf5']}), xxhash {m.get('xxhash', '?')}, imgbench {m['imgbench']}.", "",
             "Seconds are the median of the repeats with (min–max). Stores end when the files are "
             "closed (no fsync); *warm* reads follow evicting the store, reading every byte of it back into the "
             "page cache and an untimed read; *cold* reads follow evicting the store's files from the page cache. Every read was compared with the source. Peak memory is "
             "the process's peak resident set during the call; *+MB* is that peak minus the resident set "
             "just before the call (the disk backend's forked worker processes are not included).",
             ""]
    if len(set(df["host"])) > 1:
        lines += [f"**Note**: measured on {len(set(df['host']))} different hosts "
                  f"({', '.join(sorted(set(df['host'])))}); compare rows only within one host.", ""]
    lim = s[s["backend"] == NUMPY].set_index(["experiment", "n", "cache"])["median"]
    if not lim.empty:
        lines += [f"*× numpy*: the median over that of `np.save` / `np.load` of the same arrays at the same n "
                  f"and cache, timed by the same method in the same run (the rows `{NUMPY}`).", ""]
    for exp in ORDER[:4]:
        part = s[s["experiment"] == exp]
        if part.empty:
            continue
        lines += [f"## {exp}", "", "| backend | n | cache | seconds (min–max) | × numpy | images/s | MB on disk "
                  "(allocated) | files | peak MB (+MB) | verified |", "|---|---:|---|---|---:|---:|---:|---:|---:|---|"]
        for _, r in part.iterrows():
            base = lim.get((exp, r["n"], r["cache"]), np.nan)
            ratio = f"{r['median'] / base:,.2f}" if base == base else ""
            lines.append(
                f"| {r['backend']} | {r['n']:,} | {r['cache']} | {_fmt_s(r['median'])} "
                f"({_fmt_s(r['lo'])}–{_fmt_s(r['hi'])}) | {ratio} | {r['images_per_s']:,.0f} | "
                f"{r['bytes_apparent'] / 1e6:,.2f} ({r['bytes_allocated'] / 1e6:,.2f}) | {int(r['files']):,} | "
                f"{r['peak_rss'] / 2**20:,.0f} (+{r['extra_rss'] / 2**20:,.0f}) | "
                f"{'yes' if r['verified'] else 'NO'} |")
        lines.append("")
    lines += _epoch_table(s) + _random_read_table(s) + _encodings_table(s)
    if integrity is not None:
        lines += integrity_tables(integrity) + _verify_cost_table(s)
    if config is not None:
        import yaml

        lines += ["## Configuration", "", "```yaml", yaml.safe_dump(config, sort_keys=False).strip(), "```", ""]
    Path(out).write_text("\n".join(lines))


def _epoch_table(s: pd.DataFrame) -> list[str]:
    part = s[s["experiment"] == "epoch"]
    if part.empty:
        return []
    lines = ["## epoch", "",
             f"Batches of {int(part['batch_size'].iloc[0])} from the largest store ({int(part['n'].iloc[0]):,} "
             "images), read by *workers* processes that deliver each batch to the main process (0: the main "
             "process reads). A timed pass is the whole epoch or, where that is slower, the part of it read "
             "within `epoch.seconds` (*images*: how many were counted, median); a shuffled pass draws from "
             "a permutation of the whole store. Batch latency runs from request to arrival.", "",
             "| backend | order | workers | cache | images/s (min–max) | images | seconds | "
             "batch p50 / p95 / p99 ms | verified |",
             "|---|---|---:|---|---|---:|---|---|---|"]
    for _, r in part.iterrows():
        lines.append(f"| {r['backend']} | {r['order']} | {int(r['workers'])} | {r['cache']} | "
                     f"{r['images_per_s']:,.0f} ({r['ips_lo']:,.0f}–{r['ips_hi']:,.0f}) | {int(r['images']):,} | "
                     f"{_fmt_s(r['median'])} | {r['p50_ms']:.2f} / {r['p95_ms']:.2f} / {r['p99_ms']:.2f} | "
                     f"{'yes' if r['verified'] else 'NO'} |")
    return lines + [""]


def encodings(s: pd.DataFrame) -> pd.DataFrame:
    """Per backend label at the largest n: what it keeps (coding), bytes per image on disk, store
    and warm read rates, Pillow alone decoding the same bytes from memory with as many processes
    (the `decode` rows, timed alternately with the reads), and the PSNR of what it reads back."""
    n = s.loc[s["experiment"] == "store_many", "n"].max()
    if n != n:
        return pd.DataFrame()
    at = s[(s["n"] == n) & (s["backend"] != NUMPY)].set_index("backend")
    st = at[at["experiment"] == "store_many"]
    rd = at[(at["experiment"] == "read_many") & (at["cache"] == "warm")]
    dec = at[at["experiment"] == "decode"]
    out = pd.DataFrame({"encoding": st["encoding"], "bytes_per_image": st["bytes_apparent"] / n,
                        "store_ips": st["images_per_s"], "read_ips": rd["images_per_s"],
                        "decode_ips": dec["images_per_s"], "decode_workers": dec["workers"],
                        "psnr_db": st["psnr_db"], "pixels_per_image": st["image_bytes"]})
    return out.reindex(st.index).reset_index()  # in the table's backend order


def _encodings_table(s: pd.DataFrame) -> list[str]:
    e = encodings(s)
    if e.empty:
        return []
    n = int(s.loc[s["experiment"] == "store_many", "n"].max())
    lines = ["## encodings", "",
             f"What each store keeps per image at n = {n:,}: bytes on disk per image (the pixels: "
             f"{e['pixels_per_image'].median():,.0f} bytes per image), store and warm read rates, and for our "
             "encoded stores the warm read against Pillow alone decoding the same bytes from memory into one "
             "array with as many processes, timed alternately with the reads in the same job (*read / Pillow*; "
             "1.00: the container costs nothing). PSNR: of what a lossy store reads back against the decoded "
             "source (inf: exactly the decoded source; empty: lossless).", "",
             "| backend | coding | bytes per image | × pixels | store images/s | read images/s (warm) | "
             "Pillow alone images/s (processes) | read / Pillow | PSNR dB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for _, r in e.iterrows():
        paired = r["decode_ips"] == r["decode_ips"]
        lines.append(f"| {r['backend']} | {r['encoding']} | {r['bytes_per_image']:,.0f} | "
                     f"{r['bytes_per_image'] / r['pixels_per_image']:.3f} | {r['store_ips']:,.0f} | "
                     f"{r['read_ips']:,.0f} | "
                     f"{f'{r.decode_ips:,.0f} ({int(r.decode_workers)})' if paired else ''} | "
                     f"{f'{r.read_ips / r.decode_ips:.2f}' if paired else ''} | "
                     f"{'' if r['psnr_db'] != r['psnr_db'] else f'{r.psnr_db:.2f}'} |")
    return lines + [""]


def _random_read_table(s: pd.DataFrame) -> list[str]:
    part = s[s["experiment"] == "random_read"]
    if part.empty:
        return []
    lines = ["## random_read", "",
             f"{int(part['k'].iloc[0]):,} single images of random ids per repeat, through one open reader, "
             "each timed on its own; latencies are medians over the repeats.", "",
             "| backend | cache | p50 µs | p95 µs | p99 µs | mean µs | verified |", "|---|---|---:|---:|---:|---:|---|"]
    for _, r in part.iterrows():
        lines.append(f"| {r['backend']} | {r['cache']} | {r['p50_ms'] * 1e3:,.1f} | {r['p95_ms'] * 1e3:,.1f} | "
                     f"{r['p99_ms'] * 1e3:,.1f} | {r['mean_ms'] * 1e3:,.1f} | {'yes' if r['verified'] else 'NO'} |")
    return lines + [""]


def _read_outcome(text: str) -> str:
    """A plain read's outcome in a table cell: silent wrong results in bold."""
    text = str(text)
    if text.startswith("error"):
        return "error"
    if text.startswith(("crash", "hang")):
        return f"**{text}**"
    if text == "correct":
        return "unaffected"
    return f"**{text}**"


def _event_outcome(r) -> str:
    if r["fault"] == "killed store":
        if str(r["read"]).startswith("not run"):
            return str(r["read"])
        swept = str(r["verified_read"]).endswith("leftovers swept")
        return f"{'old store intact' if r['verify'] == 'old store intact' else '**old store damaged**'}; " \
               f"{'the next store swept up' if swept else '**' + str(r['verified_read']) + '**'}"
    if r["fault"] == "concurrent overwrite":
        read = str(r["read"])
        return "old images" if read == "old images" else ("error (replaced)" if read.startswith("error") else
                                                           f"**{read}**")
    read = str(r["read"])
    if read.startswith("not run"):
        return read
    if not read.startswith("DiskFullError"):
        return f"**{read[:60]}**"
    ok = r["verify"] == "old store intact" and r["verified_read"] == "no temporary left"
    return "DiskFullError; old store intact, nothing left" if ok else f"DiskFullError; **{r['verify']}, " \
                                                                      f"{r['verified_read']}**"


def integrity_tables(df: pd.DataFrame) -> list[str]:
    """The fault battery (integrity.csv): what a plain read and verify made of each damage, and
    what a killed store, a replacing writer and a full disk did."""
    if df.empty:
        return []
    from .faults import DAMAGE, EVENTS

    n = int(df.loc[df["fault"].isin(DAMAGE), "images"].max())
    lines = ["## integrity", "",
             f"Each damage was done to a fresh store of {n:,} images: the middle byte of one image's stored bytes "
             "flipped (found in the store's files), the file holding them cut to half or deleted, its label "
             "changed where the format keeps labels, the manifest's count lowered by one. A cell is what a plain "
             "`read_many` returned (**bold**: silently wrong, no error), then whether `imgbench verify` found "
             "it. A reader with `verify=True` "]
    vr = df[df["fault"].isin(DAMAGE)]
    bad = vr[~vr["verified_read"].astype(str).str.startswith("error")]
    lines[-1] += ("raised an error in every case." if bad.empty else
                  "returned data without an error in: " + ", ".join(f"{b} ({f})" for b, f in
                                                                    zip(bad["backend"], bad["fault"])) + ".")
    lines += ["", "| backend | " + " | ".join(DAMAGE) + " |", "|---|" + "---|" * len(DAMAGE)]
    for backend, g in df.groupby("backend", sort=False):
        g = g.set_index("fault")
        cells = []
        for fault in DAMAGE:
            if fault not in g.index:
                cells.append("")
                continue
            r = g.loc[fault]
            found = "found" if str(r["verify"]).startswith("detected") else "**MISSED**"
            cells.append(f"{_read_outcome(r['read'])} · verify {found}")
        lines.append(f"| {backend} | " + " | ".join(cells) + " |")
    k = df.loc[df["fault"] == "killed store", "images"]
    lines += ["", f"*killed store*: the process storing {int(k.max()) if len(k) else 0:,} images over an existing store "
              "(and its coding workers) killed with SIGKILL as soon as it had written a file; then the same store "
              "again. *concurrent overwrite*: a reader that had read a batch reads every image again after another "
              "process replaced the store (overwrite=True). *disk full*: a store over an existing one into a tmpfs "
              "too small for it, in a private mount namespace.", "",
              "| backend | " + " | ".join(EVENTS) + " |", "|---|" + "---|" * len(EVENTS)]
    for backend, g in df.groupby("backend", sort=False):
        g = g.set_index("fault")
        lines.append(f"| {backend} | " + " | ".join(_event_outcome(g.loc[e].to_dict() | {"fault": e})
                                                     if e in g.index else "" for e in EVENTS) + " |")
    return lines + [""]


def _verify_cost_table(s: pd.DataFrame) -> list[str]:
    ver = s[(s["experiment"] == "verify")]
    if ver.empty:
        return []
    n = int(ver["n"].max())  # the largest store: fixed costs (opening, starting processes) weigh least
    at = s[s["n"] == n].set_index(["experiment", "backend", "cache"])["median"]
    lines = [f"What checking costs at n = {n:,}: `verify` of the whole store (every image's stored bytes against "
             "its checksum, warm cache) against a warm `read_many` in the same job, alternately; and the checksums "
             "alone (XXH3 of every image's stored bytes with its label, in one process, from memory, by the loop "
             "the stores use) against `store_many`, which computes them as it writes.", "",
             "| backend | read_many warm | verify | verify / read | store_many | checksums alone | "
             "checksums / store |", "|---|---:|---:|---:|---:|---:|---:|"]
    for b in ver[ver["n"] == n]["backend"]:
        read, v = at.get(("read_many", b, "warm"), np.nan), at.get(("verify", b, "warm"), np.nan)
        store, c = at.get(("store_many", b, "none"), np.nan), at.get(("checksum", b, "memory"), np.nan)
        lines.append(f"| {b} | {_fmt_s(read)} | {_fmt_s(v)} | {v / read:.2f} | {_fmt_s(store)} | "
                     f"{_fmt_s(c) if c == c else ''} | {f'{c / store:.3f}' if c == c else ''} |")
    return lines + [""]


# ------------------------------------------------------------------ plots

# One colour per format family on every plot; the article's own methods in their family's colour,
# muted (light, crosses); npy, the raw-array limit, as a thin black reference line.
COLORS = {"disk": "tab:blue", "lmdb": "tab:orange", "hdf5": "tab:green", "npy": "black", "zarr": "tab:purple",
          "tar": "tab:brown", "parquet": "tab:red"}
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


def label(backend: str) -> str:
    return "npy (the raw-array limit)" if backend == LIMIT else backend


def _lines(ax, s: pd.DataFrame, y: str = "median", band=("lo", "hi")):
    for (backend, cache), part in s.groupby(["backend", "cache"], sort=False):
        part = part.sort_values("n")
        ax.plot(part["n"], part[y], STYLES.get(cache, "-"), label=label(backend), **style(backend))
        if band and backend != LIMIT:
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


def _epoch_plot(plt, s: pd.DataFrame, path: Path, where: str) -> None:
    ep = s[s["experiment"] == "epoch"]
    caches = [c for c in ("warm", "cold") if c in set(ep["cache"])] or ["warm"]
    orders = [o for o in ("sequential", "shuffled") if o in set(ep["order"])] or ["sequential"]
    fig, axes = plt.subplots(len(caches), len(orders), figsize=(5 * len(orders) + 2, 3.6 * len(caches)),
                             sharey=True, sharex=True, squeeze=False)
    workers = sorted(set(ep["workers"].dropna().astype(int))) or [0]
    for i, cache in enumerate(caches):
        for j, order in enumerate(orders):
            ax = axes[i][j]
            part = ep[(ep["cache"] == cache) & (ep["order"] == order)]
            for backend, line in part.groupby("backend", sort=False):
                line = line.sort_values("workers")
                x = [workers.index(int(w)) for w in line["workers"]]
                ax.errorbar(x, line["images_per_s"], yerr=[line["images_per_s"] - line["ips_lo"],
                                                          line["ips_hi"] - line["images_per_s"]],
                            capsize=2, label=label(backend), **style(backend))
            ax.set_xticks(range(len(workers)), [str(w) for w in workers])
            ax.set_yscale("log")
            ax.set_title(f"{order}, {cache} page cache", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            if i == len(caches) - 1:
                ax.set_xlabel("worker processes (0: the main process reads)")
            if j == 0:
                ax.set_ylabel("images per second")
    _legend(axes[0][-1])
    batch = int(ep["batch_size"].iloc[0]) if not ep.empty else 0
    n = int(ep["n"].iloc[0]) if not ep.empty else 0
    fig.suptitle(f"Epochs of the {n:,}-image store in batches of {batch}; a pass is the whole epoch or what "
                 f"epoch.seconds allows\n(median, bars: min–max; {where})", fontsize=10)
    _save(fig, path)
    plt.close(fig)


def _latency_plot(plt, s: pd.DataFrame, path: Path, where: str) -> None:
    rr = s[s["experiment"] == "random_read"]
    fig, ax = plt.subplots(figsize=(9, 4.8))
    names = list(dict.fromkeys(rr["backend"]))
    for k, b in enumerate(names):
        for dx, cache, marker in ((-0.15, "warm", "o"), (0.15, "cold", "s")):
            r = rr[(rr["backend"] == b) & (rr["cache"] == cache)]
            if r.empty:
                continue
            r = r.iloc[0]
            us = r[["p50_ms", "p95_ms", "p99_ms"]].to_numpy(float) * 1e3
            muted = 0.5 if b.startswith("article-") else 1
            ax.vlines(k + dx, us[0], us[2], color=color(b), lw=2, alpha=0.6 * muted)
            ax.plot(k + dx, us[0], marker, color=color(b), ms=7, alpha=muted,
                    mfc="white" if cache == "cold" else color(b))
            ax.plot(k + dx, us[1], "_", color=color(b), ms=10)
    limit = rr[(rr["backend"] == LIMIT) & (rr["cache"] == "warm")]
    if not limit.empty:
        ax.axhline(limit["p50_ms"].iloc[0] * 1e3, color="black", lw=0.8, ls=":", label="npy warm p50 (the limit)")
    ax.plot([], [], "o", color="grey", label="warm: p50 (line up to p99, tick: p95)")
    ax.plot([], [], "s", color="grey", mfc="white", label="cold: p50 (line up to p99, tick: p95)")
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
