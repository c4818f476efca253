"""Merge the jobs' timing CSVs into one table, and its statistics: the median and range of each
measurement's repeats. Everything after the merge reads only the merged table."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

ORDER = ["store_many", "read_many", "store_single", "read_single", "epoch", "random_read", "decode", "verify",
         "checksum", "claim-take", "claim-shuffle"]
KEYS = ["experiment", "backend", "client", "n", "cache"]
READS = ("read_many", "epoch", "random_read")  # the experiments with a client: who read the store
NUMPY = "numpy"  # rows of np.save / np.load of the same arrays: the limit (imgbench.bench.LIMIT)
ACCESS_KEYS = ["order", "loader", "workers", "batch_size", "k"]  # empty outside the access-pattern experiments
SHUFFLE = ["shuffle_buffer", "shuffle_block", "same_block", "same_block_uniform", "distance_ratio"]
LATENCY = ["p50_ms", "p95_ms", "p99_ms", "mean_ms"]


LOCAL = "local"  # the tier of every row not read in a storage tier of its own (bench/tiers.py)


def with_tier(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with its tier column (rows written before tiers existed, or by no tier: local)."""
    if "tier" not in df:
        return df.assign(tier=LOCAL)
    return df.assign(tier=df["tier"].astype(object).where(df["tier"].notna() & (df["tier"] != ""), LOCAL))


def merge(paths, out) -> pd.DataFrame:
    df = with_tier(pd.concat([pd.read_csv(p) for p in paths], ignore_index=True))
    from ..backends import names

    known = names()
    for col in ["client"] + ACCESS_KEYS + LATENCY + SHUFFLE + ["encoding", "psnr_db"]:
        if col not in df:
            df[col] = np.nan
    # rows written before the client and loader axes were imgbench's reader and loader
    df["client"] = df["client"].astype(object).where(
        df["client"].notna() | ~df["experiment"].isin(READS) | (df["backend"] == NUMPY), "imgbench")
    df["loader"] = df["loader"].astype(object).where(df["loader"].notna() | (df["experiment"] != "epoch"), "imgbench")
    df["encoding"] = df["encoding"].astype(object).where(df["encoding"].notna(), "raw")
    if "images" not in df:  # written before the column existed: a random read reads k, the rest n
        df["images"] = np.nan
    df["images"] = df["images"].fillna(df["k"].where(df["experiment"] == "random_read", df["n"])).astype("int64")
    for col in ("workers", "batch_size", "k", "shuffle_buffer", "shuffle_block"):  # whole numbers, empty elsewhere
        df[col] = df[col].astype("Int64")
    base = {b: (known.index(b.partition(".")[0]) if b.partition(".")[0] in known else len(known), b)
            for b in set(df["backend"])}
    from ..bench.torch_loader import LOADERS
    from ..clients import CLIENTS

    order = {"experiment": ORDER, "backend": sorted(base, key=base.get), "client": list(CLIENTS),
             "cache": ["none", "warm", "cold", "memory"], "order": ["sequential", "shuffled"],
             "loader": list(LOADERS)}
    for col, cats in order.items():
        df[col] = pd.Categorical(df[col], cats, ordered=True)
    df = df.sort_values(KEYS + ["order", "loader", "workers", "repeat"]).reset_index(drop=True)
    for col in order:
        df[col] = df[col].astype(object).where(df[col].notna(), None)
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    df.to_csv(tmp, index=False)
    tmp.replace(out)
    return df


def stats(df: pd.DataFrame, tier: str | None = LOCAL) -> pd.DataFrame:
    """One row per measurement (experiment, backend, n, cache and, for the access patterns, order,
    workers, batch size, k): median and range of the repeats. The rows of one storage tier
    (default local, where everything but the tiers' own reads ran), or of every tier (None)."""
    df = with_tier(df)
    if tier is not None:
        df = df[df["tier"] == tier]
    d = df.assign(extra_rss=df["peak_rss_bytes"] - df["rss_before_bytes"])
    for col in ["client"] + ACCESS_KEYS + LATENCY + SHUFFLE + ["psnr_db"]:
        if col not in d:
            d[col] = np.nan
    if "encoding" not in d:
        d["encoding"] = "raw"
    if "images" not in d:
        d["images"] = np.where(d["experiment"] == "random_read", d["k"], d["n"])
    # images read (or written) per second in each repeat: a time-limited epoch counts a slice of n
    d["rate"] = d["images"] / d["seconds"]
    g = d.groupby(["tier"] + KEYS + ACCESS_KEYS + ["encoding"], sort=False, dropna=False)
    s = g.agg(median=("seconds", "median"), lo=("seconds", "min"), hi=("seconds", "max"),
              repeats=("seconds", "size"), bytes_apparent=("bytes_apparent", "median"),
              bytes_allocated=("bytes_allocated", "median"), files=("files", "median"),
              peak_rss=("peak_rss_bytes", "median"), extra_rss=("extra_rss", "median"),
              verified=("verified", "all"), images=("images", "median"), images_per_s=("rate", "median"),
              ips_lo=("rate", "min"), ips_hi=("rate", "max"), psnr_db=("psnr_db", "median"),
              image_bytes=("image_bytes", "median"), **{c: (c, "median") for c in LATENCY + SHUFFLE}).reset_index()
    return s


def fmt_s(x: float) -> str:
    return f"{x * 1e3:.2f} ms" if x < 1 else f"{x:.2f} s"


def encodings(s: pd.DataFrame) -> pd.DataFrame:
    """Per backend label at the largest n: what it keeps (coding), bytes per image on disk, store
    and warm read rates, Pillow alone decoding the same bytes from memory with as many processes
    (the `decode` rows, timed alternately with the reads), and the PSNR of what it reads back."""
    n = s.loc[s["experiment"] == "store_many", "n"].max()
    if n != n:
        return pd.DataFrame()
    at = s[(s["n"] == n) & (s["backend"] != NUMPY)].set_index("backend")
    st = at[at["experiment"] == "store_many"]
    rd = at[(at["experiment"] == "read_many") & (at["cache"] == "warm") & (at["client"] == "imgbench")]
    dec = at[at["experiment"] == "decode"]
    out = pd.DataFrame({"encoding": st["encoding"], "bytes_per_image": st["bytes_apparent"] / n,
                        "store_ips": st["images_per_s"], "read_ips": rd["images_per_s"],
                        "decode_ips": dec["images_per_s"], "decode_workers": dec["workers"],
                        "psnr_db": st["psnr_db"], "pixels_per_image": st["image_bytes"]})
    return out.reindex(st.index).reset_index()  # in the table's backend order
