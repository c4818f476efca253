"""The storage tiers' tables: each tier's proof (its probe against its limits), what every format
read there and how close to the tier's floor, and which format wins each question in each tier.

Rows of a tier other than local come from the tier jobs (bench/tiers.py): cold passes only,
each with the bytes and requests the device served and the floor the tier's limits put on them.
Local's column in the winners' table is the rest of the run's warm figures of the same reads:
the dataset in memory, where the run's other tables answer.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .stats import LOCAL, NUMPY, with_tier

MISS = 0.2  # a tier whose probe is further than this from a limit is flagged

# (experiment, order, what it answers)
QUESTIONS = [("epoch", "shuffled", "shuffled epoch"), ("epoch", "sequential", "sequential epoch"),
             ("random_read", None, "random single reads"), ("read_many", None, "the whole store")]
KEYS = ["tier", "experiment", "backend", "client", "order", "loader", "workers"]


def _col(d: pd.DataFrame, name: str) -> pd.Series:
    return d[name] if name in d else pd.Series(np.nan, index=d.index)


def rows(df: pd.DataFrame) -> pd.DataFrame:
    """One row per tier and measurement of the largest store (a tier's reads are cold; local's
    are its warm ones, the store in memory): images/s (median, min, max), device bytes and
    requests per image, × floor."""
    d = with_tier(df)
    local = d["tier"] == LOCAL
    d = d[(local & (d["cache"] == "warm") | ~local & (d["cache"] == "cold"))
          & d["experiment"].isin(["epoch", "random_read", "read_many"]) & (d["backend"] != NUMPY)]
    if d.empty:
        return pd.DataFrame(columns=KEYS)
    # the largest store only, and local's rows of the backends read in the tiers, so that each
    # question compares the same formats
    d = d[d["n"] == d["n"].max()]
    read = set(d.loc[d["tier"] != LOCAL, "backend"])
    d = d[(d["tier"] != LOCAL) | d["backend"].isin(read)]
    d = d.assign(rate=d["images"] / d["seconds"], bpi=_col(d, "device_bytes") / d["images"],
                 ipi=_col(d, "device_ios") / d["images"], x_floor=_col(d, "x_floor"))
    d["workers"] = d["workers"].map(lambda w: "" if w != w or w is None or w == "" else str(int(float(w))))
    for k in ("order", "loader", "client"):
        d[k] = d[k].astype(object).where(d[k].notna(), "")
    g = d.groupby(KEYS, sort=False)
    return g.agg(images_per_s=("rate", "median"), lo=("rate", "min"), hi=("rate", "max"),
                 repeats=("rate", "size"), images=("images", "median"), n=("n", "max"),
                 bytes_per_image=("bpi", "median"), ios_per_image=("ipi", "median"),
                 x_floor=("x_floor", "median"), store_bytes=("bytes_apparent", "median"),
                 verified=("verified", "all")).reset_index()


def checks(df: pd.DataFrame) -> pd.DataFrame:
    """One row per tier (local left out): its limits, its probe (median over its jobs), the
    read-ahead and file system it ran on, and what it misses (empty: it is what it says)."""
    d = with_tier(df)
    d = d[d["tier"] != LOCAL]
    if d.empty or "probe_read_mib_s" not in d:
        return pd.DataFrame()
    out = []
    for tier, part in d.groupby("tier", sort=False):
        first = part.iloc[0]
        r = {"tier": tier, "read_mib_s": first.get("tier_read_mib_s"), "read_iops": first.get("tier_read_iops"),
             "cache": first.get("tier_cache"), "path": first.get("tier_path"),
             "probe_mib_s": part["probe_read_mib_s"].median(), "probe_iops": part["probe_read_iops"].median(),
             "read_ahead_kb": part["read_ahead_kb"].median() if "read_ahead_kb" in part else np.nan,
             "fs": first.get("tier_fs"), "device": first.get("tier_device"),
             "limit_raises": part["limit_raises"].sum() if "limit_raises" in part else 0}
        misses = []
        for limit, got, unit in (("read_mib_s", "probe_mib_s", "MiB/s"), ("read_iops", "probe_iops", "IOPS")):
            if r[limit] == r[limit] and r[limit] is not None and r[got] == r[got]:
                off = r[got] / r[limit] - 1
                if abs(off) > MISS:
                    misses.append(f"{r[got]:,.0f} {unit} against {r[limit]:,.0f} ({off:+.0%})")
        r["misses"] = "; ".join(misses)
        out.append(r)
    return pd.DataFrame(out)


def describe(c) -> str:
    """A tier's limits in words, from a checks() row."""
    if isinstance(c.get("path"), str) and c["path"]:
        return f"{c['path']} ({c.get('fs') or '?'} on {c.get('device') or '?'}) as it is"
    parts = []
    if c.get("read_mib_s") == c.get("read_mib_s") and c.get("read_mib_s") is not None:
        parts.append(f"{c['read_mib_s']:g} MiB/s")
    if c.get("read_iops") == c.get("read_iops") and c.get("read_iops") is not None:
        parts.append(f"{c['read_iops']:,.0f} IOPS")
    if c.get("cache") == c.get("cache") and c.get("cache") is not None:
        parts.append(f"page cache {c['cache']:g} of the store"
                     + (f" (a dataset {1 / c['cache']:g}× larger than memory)" if c["cache"] < 1 else ""))
    return ", ".join(parts) or "no limits"


def best(r: pd.DataFrame, experiment: str, order, client: str = "imgbench") -> pd.DataFrame:
    """Per backend, its best row for one question (the loader and worker count that read fastest)."""
    part = r[(r["experiment"] == experiment) & (r["client"] == client)]
    if order is not None:
        part = part[part["order"] == order]
    if experiment == "epoch":  # the loader that delivers batches to training: imgbench's, or the DataLoader
        part = part[part["loader"] != "loop"]
    return part.sort_values("images_per_s", ascending=False).drop_duplicates(["tier", "backend"])


def winners(df: pd.DataFrame) -> list[dict]:
    """Per question and tier (local first): the winner, its images/s, its margin over the
    runner-up and its × floor."""
    r = rows(df)
    if r.empty:
        return []
    tiers = [LOCAL] + [t for t in dict.fromkeys(r["tier"]) if t != LOCAL]
    out = []
    for exp, order, what in QUESTIONS:
        b = best(r, exp, order)
        if b[b["tier"] != LOCAL].empty:  # no tier read it: local alone answers nothing here
            continue
        for tier in tiers:
            part = b[b["tier"] == tier]
            if part.empty:
                continue
            top = part.iloc[0]
            margin = "the only backend measured"
            if len(part) > 1:
                second = part.iloc[1]
                margin = f"{top['images_per_s'] / second['images_per_s']:,.2f}× {second['backend']}"
            out.append({"question": what, "tier": tier, "winner": top["backend"], "images_per_s": top["images_per_s"],
                        "margin": margin, "x_floor": top["x_floor"], "workers": top["workers"],
                        "last": part.iloc[-1]["backend"], "last_ips": part.iloc[-1]["images_per_s"]})
    return out


def _num(x, fmt="{:,.0f}") -> str:
    return "" if x is None or x != x else fmt.format(x)


def tables(df: pd.DataFrame) -> list[str]:
    """summary.md's storage-tier section (nothing when the run read in no tier; a tier left out
    is named in the summary's left-out line)."""
    c, r = checks(df), rows(df)
    if c.empty:
        return []
    lines = ["## Storage tiers", "",
             "The largest store of each backend read again where datasets live (docs/storage.md): every pass "
             "cold, inside a cgroup that limits its reads and the page cache it may keep (an *emulated* tier), or on "
             "another file system (a *path* tier). *probe*: what the tier's job measured on the store's device, off "
             "the clock (1 MiB reads in order; random 4 KiB reads; past the page cache; a second each, after a quarter "
             "second uncounted). A tier whose probe misses "
             f"a limit by more than {MISS:.0%} is flagged. Emulated limits have no per-request latency: a network "
             "volume's 0.5–1 ms per request at queue depth 1 is not in these figures.", ""]
    if not c.empty:
        lines += ["| tier | limits | probe MiB/s | probe IOPS | read-ahead KiB | file system (device) | cache limit raised | "
                  "check |", "|---|---|---:|---:|---:|---|---:|---|"]
        for _, t in c.iterrows():
            flag = f"**misses its limits**: {t['misses']}" if t["misses"] else "as it says"
            lines.append(f"| {t['tier']} | {describe(t)} | {_num(t['probe_mib_s'], '{:,.1f}')} | "
                         f"{_num(t['probe_iops'])} | {_num(t['read_ahead_kb'])} | {t['fs'] or ''} "
                         f"({t['device'] or ''}) | {int(t['limit_raises'] or 0)} | {flag} |")
        lines.append("")
    w = winners(df)
    if w:
        lines += ["### Which format wins, per tier", "",
                  "imgbench's reader (epochs: the loader and worker count that read fastest); each tier's reads "
                  "are cold; *local* is the same reads of the store in memory (warm), from the rest of the run. "
                  "*× floor*: the pass's time over what the tier's "
                  "bandwidth and IOPS need for the bytes and requests it read (1: at the limit).", "",
                  "| question | tier | winner | images/s | over the runner-up | × floor | slowest |",
                  "|---|---|---|---:|---|---:|---|"]
        for a in w:
            lines.append(f"| {a['question']} | {a['tier']} | **{a['winner']}** | {a['images_per_s']:,.0f} | "
                         f"{a['margin']} | {_num(a['x_floor'], '{:.2f}')} | {a['last']} ({a['last_ips']:,.0f}) |")
        lines.append("")
    t = r[r["tier"] != LOCAL]
    if not t.empty:
        lines += ["### Every tier read", "",
                  "*bytes / image* and *requests / image*: what the device served per image read (the cgroup's "
                  "counters); the store's own bytes per image are in *store*.", "",
                  "| tier | experiment | backend | client | order | loader | workers | images/s (min–max) | images | "
                  "bytes / image (store) | requests / image | × floor | verified |",
                  "|---|---|---|---|---|---|---:|---|---:|---|---:|---:|---|"]
        for _, x in t.iterrows():
            store = x["store_bytes"] / x["n"] if x["n"] else np.nan
            lines.append(f"| {x['tier']} | {x['experiment']} | {x['backend']} | {x['client']} | {x['order']} | "
                         f"{x['loader']} | {x['workers']} | {x['images_per_s']:,.0f} ({x['lo']:,.0f}–{x['hi']:,.0f}) | "
                         f"{int(x['images']):,} | {_num(x['bytes_per_image'])} ({_num(store)}) | "
                         f"{_num(x['ios_per_image'], '{:.2f}')} | {_num(x['x_floor'], '{:.2f}')} | "
                         f"{'yes' if x['verified'] else 'NO'} |")
        lines.append("")
    return lines
