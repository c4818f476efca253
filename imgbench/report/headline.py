"""The report's landing page: what was measured, where, and which backend wins each question.

`landing(timings, integrity, config, out)` writes reStructuredText that report/workflow.rst
includes. Every figure comes from the merged tables (imgbench.report.stats), at the largest n
measured; the numpy limit (np.save / np.load) is quoted beside a winner, never a winner itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .stats import LOCAL, NUMPY, READS, fmt_s, stats, with_tier
from .summary import left_out_line, with_missing_loaders


@dataclass
class Answer:
    question: str
    winner: str  # backend label ("" when nothing was measured)
    figure: str  # the winner's figure, e.g. "0.05 s"
    margin: str  # by how much, against the runner-up (and the limit where there is one)


def _mb(x: float) -> str:
    return f"{x / 1e6:,.1f} MB"


def _rate(x: float) -> str:
    return f"{x:,.0f} images/s"


def _answer(question: str, values: pd.Series, fmt, lower_is_better: bool = True, limit: float | None = None,
            limit_what: str = "", word: str = "faster") -> Answer:
    """The winner of `values` (backend -> figure) and its margin over the runner-up."""
    ranked = values.dropna().sort_values(ascending=lower_is_better, kind="stable")
    if ranked.empty:
        return Answer(question, "", "", "not measured")
    best, value = ranked.index[0], float(ranked.iloc[0])
    if len(ranked) == 1:
        margin = "the only backend measured"
    else:
        second, other = ranked.index[1], float(ranked.iloc[1])
        ratio = other / value if lower_is_better else value / other
        margin = f"{ratio:,.2f}× {word} than {second} ({fmt(other)}), the runner-up"
    if limit is not None and limit == limit:
        margin += f"; {limit_what} {fmt(limit)}"
    return Answer(question, best, fmt(value), margin)


def answers(timings: pd.DataFrame, integrity: pd.DataFrame | None = None) -> tuple[int, list[Answer]]:
    """The largest n measured, and the headline questions answered at that n."""
    s = stats(timings)
    many = s[s["experiment"].isin(["store_many", "read_many"])]
    n = int(many["n"].max()) if not many.empty else int(s["n"].max())
    at = s[s["n"] == n]

    def per_backend(exp: str, cache: str, col: str = "median", client: str = "imgbench",
                    rows: pd.DataFrame | None = None) -> tuple[pd.Series, float | None]:
        rows = at if rows is None else rows
        part = rows[(rows["experiment"] == exp) & (rows["cache"] == cache)]
        if exp in READS:
            part = part[part["client"] == client]
        part = part.set_index("backend")[col]
        limit = part.get(NUMPY)
        return part.drop(NUMPY, errors="ignore"), (None if limit is None else float(limit))

    out = []
    store, lim = per_backend("store_many", "none")
    out.append(_answer(f"Fastest to store {n:,} images", store, fmt_s, limit=lim, limit_what="np.save alone"))
    for cache in ("warm", "cold"):
        # cold whole reads may stop below the largest n (cold_max_n): the largest n read cold
        cold = many[(many["experiment"] == "read_many") & (many["cache"] == cache) & (many["backend"] != NUMPY)]
        k = int(cold["n"].max()) if not cold.empty else n
        read, lim = per_backend("read_many", cache, rows=s[s["n"] == k])
        out.append(_answer(f"Fastest to read {k:,} images, {cache} cache", read, fmt_s, limit=lim,
                           limit_what="np.load alone"))
    stock = s[(s["experiment"] == "read_many") & (s["client"] == "stock") & (s["cache"] == "warm")]
    if not stock.empty:  # at the largest n the stock client read (stock_max_n)
        k = int(stock["n"].max())
        read = stock[stock["n"] == k].set_index("backend")["median"]
        lim = s[(s["experiment"] == "read_many") & (s["backend"] == NUMPY) & (s["n"] == k) & (s["cache"] == "warm")]
        out.append(_answer(f"Fastest to read {k:,} images through the format's own library, warm cache", read,
                           fmt_s, limit=float(lim["median"].iloc[0]) if len(lim) else None,
                           limit_what="np.load alone"))
    size, _ = per_backend("store_many", "none", "bytes_allocated")
    px = at[at["experiment"] == "store_many"]["image_bytes"].median()
    out.append(_answer(f"Smallest on disk ({n:,} images)", size, _mb, limit=px * n if px == px else None,
                       limit_what="the raw pixels are", word="smaller"))
    ep = s[(s["experiment"] == "epoch") & (s["order"] == "shuffled")]
    for client, loader, how in (("imgbench", "imgbench", "imgbench's reader and loader"),
                                ("imgbench", "torch-batch", "imgbench's reader, PyTorch's DataLoader"),
                                ("stock", "torch-batch", "the format's own library, PyTorch's DataLoader")):
        for cache in ("warm", "cold"):
            part = ep[(ep["cache"] == cache) & (ep["client"] == client) & (ep["loader"] == loader)]
            if part.empty:
                continue
            best = part.sort_values("images_per_s", ascending=False).drop_duplicates("backend").set_index("backend")
            rates = best["images_per_s"].drop(NUMPY, errors="ignore")
            a = _answer(f"Best shuffled epoch, {cache} cache ({how})", rates, _rate, lower_is_better=False)
            if a.winner:
                w = best.loc[a.winner, "workers"]
                a.figure += f" with {int(w)} worker{'s' if w != 1 else ''}" if w == w else ""
            out.append(a)
    out += _tier_answers(timings)
    if integrity is not None and not integrity.empty:
        out.append(_corruption(integrity))
    return n, out


def _tier_answers(timings: pd.DataFrame) -> list[Answer]:
    """Per storage tier (not local), the best shuffled epoch and random reads there: where the
    dataset is larger than memory and on a cloud disk, the question people choose a format for."""
    from . import tiers

    checks = tiers.checks(timings)
    if checks.empty:
        return []
    where = {c["tier"]: c for _, c in checks.iterrows()}
    out = []
    for w in tiers.winners(timings):
        if w["tier"] == tiers.LOCAL or w["question"] not in ("shuffled epoch", "random single reads"):
            continue
        c = where[w["tier"]]
        flag = f" (**the tier misses its limits**: {c['misses']})" if c["misses"] else ""
        workers = f" with {int(w['workers'])} worker{'s' if int(w['workers']) != 1 else ''}" \
            if w["question"] == "shuffled epoch" and str(w["workers"]) != "" else ""
        out.append(Answer(f"Best {w['question']} in tier {w['tier']}: {tiers.describe(c)}{flag}", w["winner"],
                          _rate(w["images_per_s"]) + workers,
                          f"{w['margin']}; {w['x_floor']:.2f}× the tier's floor; slowest {w['last']} "
                          f"({_rate(w['last_ips'])})"))
    return out


def _corruption(df: pd.DataFrame) -> Answer:
    """Which formats notice a flipped byte on a plain read, and whether verify found every damage."""
    from ..bench.rows import DAMAGE

    damage = df[df["fault"].isin(DAMAGE)]
    found = damage["verify"].astype(str).str.startswith("detected")
    flipped = damage[damage["fault"] == "flipped byte"]
    loud = flipped[flipped["read"].astype(str).str.startswith("error")]["backend"].tolist()
    silent = flipped[~flipped["read"].astype(str).str.startswith(("error", "correct"))]["backend"].tolist()
    verify = (f"imgbench verify found all {int(found.sum())} damages" if found.all() else
              f"imgbench verify MISSED {int((~found).sum())} of {len(found)} damages")
    margin = (f"a plain read returned wrong pixels without an error in {', '.join(silent)}" if silent else
              "no plain read returned wrong pixels silently")
    winner = ", ".join(loud) if loud else "none"
    return Answer("Which formats notice a flipped byte without verify", winner, verify, margin)


def landing(timings: pd.DataFrame, integrity: pd.DataFrame | None, config: dict, out,
            left_out: dict | None = None) -> None:
    """reStructuredText for report/workflow.rst: the setting and the headline table."""
    m = timings.iloc[0]
    left_out = with_missing_loaders(timings, config, left_out)
    n, rows = answers(timings, integrity)
    backends = [b for b in dict.fromkeys(timings["backend"]) if b != NUMPY]
    exps = [e for e in dict.fromkeys(timings["experiment"])]
    tier_names = [t for t in dict.fromkeys(with_tier(timings)["tier"]) if t != LOCAL]
    lines = [
        f"**Dataset** ``{m['dataset']}``: its training images repeated to {int(config.get('n_images', n)):,} "
        f"({_shape(timings)}); stores of the first {_cutoffs(config.get('cutoffs', []))} of them; "
        f"{int(config.get('repeats', 0))} repeats of every measurement (median, with min–max in the tables).",
        "",
        f"**Machine** ``{m['host']}``: {m['cpu']}, {int(m['cores'])} cores, stores on {m['filesystem']}; "
        f"Python {m['python']}, numpy {m['numpy']}, Pillow {m['pillow']}, lmdb {m['lmdb']}, h5py {m['h5py']} "
        f"(HDF5 {m['hdf5']}), imgbench {m['imgbench']}."
        + (f" **Rows come from {timings['host'].nunique()} hosts: compare within one.**"
           if timings["host"].nunique() > 1 else ""),
        "",
        f"**Measured** for {len(backends)} backends ({', '.join(backends)}): {', '.join(exps)}"
        + (", and the fault battery (integrity)" if integrity is not None and not integrity.empty else "") + "."
        + (f" The largest stores read again in storage tier{'s' if len(tier_names) > 1 else ''} "
           f"{', '.join(tier_names)} (every pass cold; docs/storage.md)." if tier_names else ""),
        "",
        *left_out_line(left_out),
        f"Headline at n = {n:,} (*warm*: the store's files in the page cache; *cold*: evicted before each read):",
        "",
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 30 20 20 50",
        "",
        "   * - Question",
        "     - Winner",
        "     - Its figure",
        "     - By how much",
    ]
    for a in rows:
        lines += [f"   * - {a.question}", f"     - **{a.winner or '–'}**", f"     - {a.figure or '–'}",
                  f"     - {a.margin}"]
    Path(out).write_text("\n".join(lines) + "\n")


def _cutoffs(cutoffs) -> str:
    c = [f"{x:,}" for x in sorted(cutoffs)]
    return c[0] if len(c) == 1 else f"{', '.join(c[:-1])} and {c[-1]}"


def _shape(timings: pd.DataFrame) -> str:
    px = timings["image_bytes"].dropna()
    return f"a median {int(np.median(px)):,} bytes of pixels each" if len(px) else "of unknown size"
