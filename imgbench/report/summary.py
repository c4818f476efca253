"""summary.md: the run's tables in Markdown (what the README and docs/results copy)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import codecs, claims, tiers
from .stats import NUMPY, ORDER, READS, encodings, fmt_s, stats


def left_out_line(left_out: dict | None) -> list[str]:
    """One line naming the configured backends the run left out, and why; none if none were."""
    if not left_out:
        return []
    return ["**Left out of this run**: " + "; ".join(f"{b}: {why}" for b, why in left_out.items()) + ".", ""]


def with_missing_loaders(df: pd.DataFrame, config: dict | None, left_out: dict | None) -> dict:
    """`left_out` and the configured epoch loaders that gave no row (PyTorch was not importable
    where the epochs ran: those loaders are left out there with a line in each job's log)."""
    out = dict(left_out or {})
    asked = ((config or {}).get("epoch") or {}).get("loaders") or []
    epochs = df[df["experiment"] == "epoch"] if "loader" in df else df.iloc[:0]
    if epochs.empty:
        return out
    for loader in asked:
        if loader.startswith("torch-") and not (epochs["loader"] == loader).any():
            out[f"the {loader} loader"] = ("PyTorch's DataLoader did not import where the epochs ran; "
                                           "pip install torch (its CPU build) and run again")
    return out


def summary(df: pd.DataFrame, out, config: dict | None = None, integrity: pd.DataFrame | None = None,
            left_out: dict | None = None, codec_rows: pd.DataFrame | None = None) -> None:
    left_out = with_missing_loaders(df, config, left_out)
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
    lines += left_out_line(left_out)
    if len(set(df["host"])) > 1:
        lines += [f"**Note**: measured on {len(set(df['host']))} different hosts "
                  f"({', '.join(sorted(set(df['host'])))}); compare rows only within one host.", ""]
    lim = s[s["backend"] == NUMPY].set_index(["experiment", "n", "cache"])["median"]
    lim = lim[~lim.index.duplicated()]
    if not lim.empty:
        lines += [f"*× numpy*: the median over that of `np.save` / `np.load` of the same arrays at the same n "
                  f"and cache, timed by the same method in the same run (the rows `{NUMPY}`).", ""]
    for exp in ORDER[:4]:
        part = s[s["experiment"] == exp]
        if part.empty:
            continue
        client = exp in READS  # who read: imgbench's reader, or the format's own library (stock)
        lines += [f"## {exp}", "", f"| backend |{' client |' if client else ''} n | cache | seconds (min–max) | "
                  "× numpy | images/s | MB on disk (allocated) | files | peak MB (+MB) | verified |",
                  f"|---|{'---|' if client else ''}---:|---|---|---:|---:|---:|---:|---:|---|"]
        for _, r in part.iterrows():
            base = lim.get((exp, r["n"], r["cache"]), np.nan)
            ratio = f"{r['median'] / base:,.2f}" if base == base else ""
            lines.append(
                f"| {r['backend']} |{f' {_text(r.client)} |' if client else ''} {r['n']:,} | {r['cache']} | "
                f"{fmt_s(r['median'])} "
                f"({fmt_s(r['lo'])}–{fmt_s(r['hi'])}) | {ratio} | {r['images_per_s']:,.0f} | "
                f"{r['bytes_apparent'] / 1e6:,.2f} ({r['bytes_allocated'] / 1e6:,.2f}) | {int(r['files']):,} | "
                f"{r['peak_rss'] / 2**20:,.0f} (+{r['extra_rss'] / 2**20:,.0f}) | "
                f"{'yes' if r['verified'] else 'NO'} |")
        lines.append("")
    lines += _stock_table(s) + _loader_table(s) + _epoch_table(s) + _random_read_table(s) + _encodings_table(s)
    lines += codecs.table(codec_rows)
    lines += tiers.tables(df)
    lines += claims.table(df)
    if integrity is not None:
        lines += integrity_tables(integrity) + _verify_cost_table(s)
    if config is not None:
        import yaml

        lines += ["## Configuration", "", "```yaml", yaml.safe_dump(config, sort_keys=False).strip(), "```", ""]
    Path(out).write_text("\n".join(lines))


def _text(x) -> str:
    """A cell's text: empty for a missing value."""
    return "" if x is None or x != x else str(x)


def _epoch_table(s: pd.DataFrame) -> list[str]:
    part = s[s["experiment"] == "epoch"]
    if part.empty:
        return []
    lines = ["## epoch", "",
             f"Batches of {int(part['batch_size'].iloc[0])} from the largest store ({int(part['n'].iloc[0]):,} "
             "images). *client*: who reads (imgbench's reader, or *stock*: the format's own library as its docs "
             "show); *loader*: what delivers the batches (*imgbench*: imgbench's own loader, forked workers reading "
             "into a preallocated shared buffer; *torch-batch*: PyTorch's DataLoader with a batch per dataset "
             "call, the README's recipe; *torch-item*: the DataLoader with an image per call and the default "
             "collate); *workers*: 0 reads in the main process. A timed pass is the whole epoch or, where that is "
             "slower, the part of it read within `epoch.seconds` (*images*: how many were counted, median). A "
             "shuffled pass draws from a permutation of the whole store, except where the library shuffles in a "
             "buffer (*buffer*: its size). *same block*: the fraction of consecutive images from the same block of "
             "ids (uniform: what a true permutation gives); *distance*: the mean id distance between consecutive "
             "images over a true permutation's (1: as spread). Batch latency runs from request to arrival "
             "(imgbench's loader) or from the previous batch's arrival (DataLoader).", "",
             "| backend | client | loader | order | workers | cache | images/s (min–max) | images | seconds | "
             "batch p50 / p95 / p99 ms | same block (uniform) | distance | buffer | verified |",
             "|---|---|---|---|---:|---|---|---:|---|---|---|---:|---:|---|"]
    for _, r in part.iterrows():
        same = "" if r["same_block"] != r["same_block"] else f"{r['same_block']:.3f} ({r['same_block_uniform']:.3f})"
        dist = "" if r["distance_ratio"] != r["distance_ratio"] else f"{r['distance_ratio']:.3f}"
        buf = "" if r["shuffle_buffer"] != r["shuffle_buffer"] else f"{int(r['shuffle_buffer']):,}"
        lines.append(f"| {r['backend']} | {r['client']} | {r['loader']} | {r['order']} | {int(r['workers'])} | "
                     f"{r['cache']} | {r['images_per_s']:,.0f} ({r['ips_lo']:,.0f}–{r['ips_hi']:,.0f}) | "
                     f"{int(r['images']):,} | {fmt_s(r['median'])} | {r['p50_ms']:.2f} / {r['p95_ms']:.2f} / "
                     f"{r['p99_ms']:.2f} | {same} | {dist} | {buf} | {'yes' if r['verified'] else 'NO'} |")
    return lines + [""]


def stock_vs_imgbench(s: pd.DataFrame) -> pd.DataFrame:
    """Per backend: the stock client's and imgbench's images/s in each read experiment (at the
    largest n, warm; epochs shuffled, through the DataLoader recipe, at each worker count), and
    imgbench's over the stock one's."""
    reads = s[(s["cache"] == "warm") & s["experiment"].isin(READS) & (s["backend"] != NUMPY)]
    whole = reads[(reads["experiment"] == "read_many") & (reads["client"] == "stock")]
    n = whole["n"].max() if len(whole) else reads["n"].max()  # the largest n both clients read whole
    reads = reads[(reads["experiment"] != "read_many") | (reads["n"] == n)]
    reads = reads[(reads["experiment"] != "epoch") | ((reads["order"] == "shuffled")
                                                      & (reads["loader"] == "torch-batch"))]
    if reads.empty or set(reads["client"]) != {"imgbench", "stock"}:
        return pd.DataFrame()
    reads = reads.assign(rate=np.where(reads["experiment"] == "random_read", 1e3 / reads["p50_ms"],
                                       reads["images_per_s"]))
    keys = ["experiment", "backend", "workers"]
    wide = reads.pivot_table(index=keys, columns="client", values="rate", aggfunc="median", dropna=False,
                             observed=True).reset_index()
    wide = wide.dropna(subset=["imgbench"]).assign(ratio=lambda w: w["imgbench"] / w["stock"])
    return wide.sort_values(["experiment", "backend", "workers"], key=lambda c: c.map(
        {e: i for i, e in enumerate(READS)}) if c.name == "experiment" else c).reset_index(drop=True)


def _stock_table(s: pd.DataFrame) -> list[str]:
    w = stock_vs_imgbench(s)
    if w.empty:
        return []
    lines = ["## stock vs imgbench", "",
             "Each format read through its own library as its documentation shows (*stock*: what a person who "
             "picked the format gets) and through imgbench's reader (what the layout allows), warm, in the same "
             "run: whole-store reads at the largest n both read (`stock_max_n`), shuffled epochs through "
             "PyTorch's DataLoader with a batch "
             "per call at each worker count, single random reads (images/s = 1 / median latency). *ours / "
             "theirs* above 1: imgbench's reader is faster. Empty: the library has no such read (WebDataset "
             "streams: no random access). The article's three have no stock row: imgbench reads them with the "
             "article's own code.", "",
             "| experiment | backend | workers | stock images/s | imgbench images/s | ours / theirs |",
             "|---|---|---:|---:|---:|---:|"]
    for _, r in w.iterrows():
        stock = "" if r["stock"] != r["stock"] else f"{r['stock']:,.0f}"
        ratio = "" if r["ratio"] != r["ratio"] else f"{r['ratio']:,.2f}"
        workers = "" if r["workers"] is pd.NA or r["workers"] != r["workers"] else int(r["workers"])
        lines.append(f"| {r['experiment']} | {r['backend']} | {workers} | {stock} | {r['imgbench']:,.0f} | {ratio} |")
    return lines + [""]


def _loader_table(s: pd.DataFrame) -> list[str]:
    """imgbench's reader through imgbench's loader and through PyTorch's DataLoader, shuffled, warm."""
    ep = s[(s["experiment"] == "epoch") & (s["client"] == "imgbench") & (s["order"] == "shuffled")
           & (s["cache"] == "warm")]
    if ep["loader"].nunique() < 2:
        return []
    wide = ep.pivot_table(index=["backend", "workers"], columns="loader", values="images_per_s", aggfunc="median",
                          observed=True)
    loaders = [c for c in ("imgbench", "loop", "torch-batch", "torch-item") if c in wide.columns]
    ratio = "imgbench" in loaders and "loop" in loaders
    lines = ["## loaders", "",
             "imgbench's reader, shuffled epochs, warm, through each loader (images/s): imgbench's own loader "
             "(what a tuned loader reaches: it reads with `get_batch(ids, out=)` into one preallocated buffer), "
             "a plain loop in the training process (`reader[ids]` per batch: `get_batch` without `out=`, a new "
             "array each batch; 0 workers only) and PyTorch's DataLoader (what training code gets)."
             + (" *loop / imgbench*: the plain loop's rate over the loader's, both in the main process." if ratio
                else ""), "",
             "| backend | workers | " + " | ".join(loaders) + (" | loop / imgbench |" if ratio else " |"),
             "|---|---:|" + "---:|" * (len(loaders) + ratio)]
    for (backend, workers), r in wide.iterrows():
        cells = ["" if r[c] != r[c] else f"{r[c]:,.0f}" for c in loaders]
        if ratio:
            q = r["loop"] / r["imgbench"]
            cells.append("" if q != q else f"{q:.2f}")
        lines.append(f"| {backend} | {int(workers)} | " + " | ".join(cells) + " |")
    return lines + [""]


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
             "| backend | client | cache | p50 µs | p95 µs | p99 µs | mean µs | verified |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    for _, r in part.iterrows():
        lines.append(f"| {r['backend']} | {r['client']} | {r['cache']} | {r['p50_ms'] * 1e3:,.1f} | "
                     f"{r['p95_ms'] * 1e3:,.1f} | "
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
    from ..bench.rows import DAMAGE, EVENTS

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
    at = s[(s["n"] == n) & (s["client"].isna() | (s["client"] == "imgbench"))]
    at = at.set_index(["experiment", "backend", "cache"])["median"]
    lines = [f"What checking costs at n = {n:,}: `verify` of the whole store (every image's stored bytes against "
             "its checksum, warm cache) against a warm `read_many` in the same job, alternately; and the checksums "
             "alone (XXH3 of every image's stored bytes with its label, in one process, from memory, by the loop "
             "the stores use) against `store_many`, which computes them as it writes.", "",
             "| backend | read_many warm | verify | verify / read | store_many | checksums alone | "
             "checksums / store |", "|---|---:|---:|---:|---:|---:|---:|"]
    for b in ver[ver["n"] == n]["backend"]:
        read, v = at.get(("read_many", b, "warm"), np.nan), at.get(("verify", b, "warm"), np.nan)
        store, c = at.get(("store_many", b, "none"), np.nan), at.get(("checksum", b, "memory"), np.nan)
        lines.append(f"| {b} | {fmt_s(read)} | {fmt_s(v)} | {v / read:.2f} | {fmt_s(store)} | "
                     f"{fmt_s(c) if c == c else ''} | {f'{c / store:.3f}' if c == c else ''} |")
    return lines + [""]
