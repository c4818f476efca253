"""The codecs experiment's table, three answers and plot, from codecs.csv (bench/codecs.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

COLOURS = {"png": "#4c72b0", "jpeg": "#dd8452", "webp": "#55a868", "webp-lossless": "#2f6b3c", "avif": "#c44e52",
           "jxl": "#8172b3", "source": "#937860"}
MARKERS = {"pillow": "o", "simplejpeg": "s", "opencv": "^", "imagecodecs": "D"}
MIN_DB = 40.0  # "a given quality": the PSNR the best-size answer asks of a lossy coding


def _family(coding: str) -> str:
    return "webp-lossless" if coding == "webp-lossless" else coding.partition("-")[0]


def _rate(d: pd.DataFrame) -> float:
    return float((d["images"] / d["seconds"]).median()) if len(d) else np.nan


def frame(c: pd.DataFrame) -> pd.DataFrame:
    """One row per coding and decoder: bytes per image, PSNR against the source and against Pillow's
    pixels, images/s decoded from memory and read from the store, the store's share of the
    decoder's rate, and at training size the rates in full and reduced, their ratio and PSNR."""
    if c is None or c.empty:
        return pd.DataFrame()
    size = c[c["experiment"] == "size"].set_index("coding")
    out = []
    for (coding, decoder), d in c[c["experiment"] == "decode"].groupby(["coding", "decoder"], sort=False):
        n = int(d["images"].iloc[0])
        read = c[(c["experiment"] == "read") & (c["coding"] == coding) & (c["decoder"] == decoder)]
        rs = c[(c["coding"] == coding) & (c["decoder"] == decoder) & (c["subset"] == "all")]
        full, reduced = _rate(rs[rs["experiment"] == "full-resize"]), _rate(rs[rs["experiment"] == "reduced-resize"])
        large = c[(c["coding"] == coding) & (c["decoder"] == decoder) & c["subset"].astype(str).str.startswith("over")]
        lf, lr = _rate(large[large["experiment"] == "full-resize"]), _rate(large[large["experiment"] == "reduced-resize"])
        red = rs[rs["experiment"] == "reduced-resize"]
        out.append(dict(coding=coding, decoder=decoder, images=n, bytes_per_image=float(size.loc[coding, "bytes"]) / n,
                        psnr_db=float(size.loc[coding, "psnr_db"]), psnr_pillow_db=float(d["psnr_pillow_db"].median()),
                        decode_ips=_rate(d), read_ips=_rate(read), backend=read["backend"].iloc[0] if len(read) else None,
                        workers=int(d["workers"].iloc[0]), full_ips=full, reduced_ips=reduced,
                        speedup=reduced / full if full == full else np.nan,
                        large_speedup=lr / lf if lf == lf else np.nan,
                        large_n=int(large["images"].iloc[0]) if len(large) else 0,
                        reduced_psnr_db=float(red["psnr_pillow_db"].median()) if len(red) else np.nan,
                        decode_size=rs["decode_size"].iloc[0] if len(rs) else np.nan))
    return pd.DataFrame(out)


def _db(x: float) -> str:
    return "exact" if x == np.inf else ("" if x != x else f"{x:.1f}")


def recompression(c: pd.DataFrame) -> dict | None:
    r = c[c["experiment"] == "jxl-recompress"] if c is not None and not c.empty else pd.DataFrame()
    if r.empty:
        return None
    back = c[c["experiment"] == "jxl-restore"]
    original = float(back["bytes"].iloc[0])
    return dict(files=int(r["images"].iloc[0]), ratio=float(r["bytes"].iloc[0]) / original,
                note=str(r["subset"].iloc[0]), recompress_ips=_rate(r), restore_ips=_rate(back),
                saved_per_file=(original - float(r["bytes"].iloc[0])) / int(r["images"].iloc[0]))


def answers(f: pd.DataFrame, rec: dict | None) -> list[str]:
    """The landing page's three questions, answered from the run's rows."""
    if f.empty:
        return []
    lines = []
    lossless = f[f["psnr_db"] == np.inf].groupby("coding")["bytes_per_image"].first()
    if rec is not None and "source" in lossless:  # the files, their JPEGs recompressed: the same pixels
        n = int(f["images"].iloc[0])
        lossless["source, JPEGs as JPEG XL"] = lossless["source"] - rec["saved_per_file"] * rec["files"] / n
    lossless = lossless.sort_values()
    if len(lossless):
        best = lossless.index[0]
        line = (f"- **Smallest without changing a pixel**: {best}, {lossless.iloc[0]:,.0f} bytes an image "
                f"(of the lossless codings: " + ", ".join(f"{k} {v:,.0f}" for k, v in lossless.items()) + ")")
        if rec is not None:
            line += (f"; JPEG XL's lossless recompression takes the JPEG files to {rec['ratio']:.3f} of their "
                     f"bytes and gives every one back bit for bit ({rec['files']:,} files)")
        lines.append(line + ".")
    rs = f.dropna(subset=["reduced_ips"])
    if len(rs):
        r = rs.loc[rs["reduced_ips"].idxmax()]
        lines.append(f"- **Fastest to read at training size** ({int(r['decode_size'])} px, shorter side): "
                     f"{r['coding']} by {r['decoder']} with its reduced-size decode, {r['reduced_ips']:,.0f} images/s "
                     f"({r['speedup']:.2f}x its full decode + resize; PSNR {_db(r['reduced_psnr_db'])} dB against it).")
    lossy = f[(f["psnr_db"] < np.inf) & (f["psnr_db"] >= MIN_DB)].groupby("coding")[["bytes_per_image", "psnr_db"]].first()
    if len(lossy):
        k = lossy["bytes_per_image"].idxmin()
        lines.append(f"- **Best size for a given quality** (PSNR at least {MIN_DB:.0f} dB against the source): {k}, "
                     f"{lossy.loc[k, 'bytes_per_image']:,.0f} bytes an image at {lossy.loc[k, 'psnr_db']:.1f} dB (of "
                     + ", ".join(f"{i} {v['bytes_per_image']:,.0f} at {v['psnr_db']:.1f} dB" for i, v in lossy.iterrows())
                     + ").")
    elif len(f[f["psnr_db"] < np.inf]):
        lines.append(f"- **Best size for a given quality**: no lossy coding of this run reaches {MIN_DB:.0f} dB.")
    return lines


def table(c: pd.DataFrame | None) -> list[str]:
    f = frame(c)
    if f.empty:
        return []
    rec = recompression(c)
    lines = ["## codecs and decoders", "",
             f"Every image of the dataset once, decoded in {int(f['workers'].iloc[0])} processes from bytes in memory "
             "(*decode*), and read whole from a store of that coding with the same decoder (*read*; its share of the "
             "decoder's rate beside it). PSNR against the source is Pillow's decode's; *vs Pillow* is the decoder's "
             "pixels against Pillow's on the same bytes. At training size, JPEGs decoded in full then resized, "
             "against decoded at a DCT scale first (Pillow `draft`, simplejpeg's minimum size, OpenCV's "
             "IMREAD_REDUCED_*; imagecodecs has none), both resized by Pillow's bilinear filter.", ""]
    lines += answers(f, rec) + [""]
    lines += ["| coding | decoder | bytes per image | PSNR dB | vs Pillow dB | decode images/s | read images/s "
              "(× decode) | at training size: full, reduced images/s | speed-up (over 800 px) | PSNR dB |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for _, r in f.iterrows():
        read = (f"{r['read_ips']:,.0f} ({r['read_ips'] / r['decode_ips']:.2f})" if r["read_ips"] == r["read_ips"]
                else "")
        ts = (f"{r['full_ips']:,.0f}, {r['reduced_ips']:,.0f}" if r["full_ips"] == r["full_ips"] else "")
        sp = (f"{r['speedup']:.2f}x" + (f" ({r['large_speedup']:.2f}x of {r['large_n']})" if r["large_n"] else "")
              if r["speedup"] == r["speedup"] else "")
        lines.append(f"| {r['coding']} | {r['decoder']} | {r['bytes_per_image']:,.0f} | {_db(r['psnr_db'])} | "
                     f"{_db(r['psnr_pillow_db'])} | {r['decode_ips']:,.0f} | {read} | {ts} | {sp} | "
                     f"{_db(r['reduced_psnr_db'])} |")
    lines.append("")
    if rec is not None:
        lines += [f"JPEG XL lossless recompression of the JPEG files ({rec['files']:,}; {rec['note']}): "
                  f"{rec['ratio']:.3f} of their bytes ({rec['saved_per_file']:,.0f} bytes a file saved), every file "
                  f"given back bit for bit; recompressing {rec['recompress_ips']:,.0f} files/s, giving back "
                  f"{rec['restore_ips']:,.0f} files/s.", ""]
    return lines


def plot(c: pd.DataFrame, path) -> None:
    """Bytes per image against images decoded per second (colour: codec; marker: decoder)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = frame(c)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    if f.empty:
        ax.text(0.5, 0.5, "codecs.codings is empty in this run (config/sample-folder.yaml measures them)",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    else:
        for _, r in f.iterrows():
            ax.scatter(r["bytes_per_image"], r["decode_ips"], color=COLOURS.get(_family(r["coding"]), "grey"),
                       marker=MARKERS.get(r["decoder"], "o"), s=50, zorder=3)
        for coding, d in f.groupby("coding", sort=False):
            top = d.loc[d["decode_ips"].idxmax()]
            label = coding if top["psnr_db"] == np.inf else f"{coding} ({top['psnr_db']:.1f} dB)"
            ax.annotate(label, (top["bytes_per_image"], top["decode_ips"]), xytext=(5, 5), textcoords="offset points",
                        fontsize=8)
        for name, m in MARKERS.items():
            if (f["decoder"] == name).any():
                ax.scatter([], [], color="grey", marker=m, label=name)
        ax.set_xscale("log")
        ax.set_xlabel("bytes per image (log)")
        ax.set_ylabel(f"images decoded per second ({int(f['workers'].iloc[0])} processes, from memory)")
        ax.legend(title="decoder", fontsize=8)
        ax.grid(alpha=0.3)
        ax.set_title("What goes in the container: size against decode speed (up and left is better)")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
