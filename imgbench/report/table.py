"""The summary as one interactive HTML table (the report's `summary.html`): sortable by any
column, filterable per column (backend, experiment, n, cache, ...) and as a whole.

Built with itables, which packages DataTables (the common JavaScript table library, MIT) for
pandas and can inline it: the page carries its own script and style and requests nothing from
the network, so it works offline and inside `snakemake --report`'s single HTML file (where each
result is an iframe of its own).
"""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from .stats import stats

COLUMNS = {  # stats() column -> heading (and the unit its numbers are in)
    "experiment": "experiment", "backend": "backend", "encoding": "encoding", "n": "n", "cache": "cache",
    "order": "order", "workers": "workers", "median_ms": "median ms", "lo_ms": "min ms", "hi_ms": "max ms",
    "images_per_s": "images/s", "mb": "MB on disk", "files": "files", "peak_mb": "peak MB", "repeats": "repeats",
    "verified": "verified",
}


PANES = ["experiment", "backend", "n", "cache"]  # a list box each above the table: click to keep those rows


def frame(timings: pd.DataFrame) -> pd.DataFrame:
    """One row per measurement, in the units people read: milliseconds, images/s, MB."""
    s = stats(timings)
    t = pd.DataFrame({
        "experiment": s["experiment"], "backend": s["backend"], "encoding": s["encoding"].fillna("raw"),
        "n": s["n"].astype(int), "cache": s["cache"], "order": s["order"].fillna(""),
        "workers": s["workers"].map(lambda w: "" if pd.isna(w) else str(int(w))),
        "median_ms": (s["median"] * 1e3).round(3), "lo_ms": (s["lo"] * 1e3).round(3),
        "hi_ms": (s["hi"] * 1e3).round(3), "images_per_s": s["images_per_s"].round(0).astype("Int64"),
        "mb": (s["bytes_allocated"] / 1e6).round(3), "files": s["files"].round(0).astype("Int64"),
        "peak_mb": (s["peak_rss"] / 2**20).round(1), "repeats": s["repeats"].astype(int),
        "verified": np.where(s["verified"], "yes", "NO"),
    })
    return t.rename(columns=COLUMNS).reset_index(drop=True)


def write(timings: pd.DataFrame, out, title: str) -> None:
    """A self-contained HTML page with the table (about 1 MB: DataTables is inlined)."""
    import itables
    from itables import to_html_datatable
    from itables.javascript import generate_init_offline_itables_html

    bundle = Path(itables.__file__).parent / "html" / "dt_bundle.js"
    df = frame(timings)
    panes = [df.columns.get_loc(c) for c in PANES]
    table = to_html_datatable(df, connected=False, pageLength=25, lengthMenu=[10, 25, 100, -1],
                              classes="display compact nowrap", order=[], showIndex=False, maxBytes=0,
                              layout={"top1": "searchPanes"},
                              searchPanes={"columns": panes, "layout": f"columns-{len(panes)}", "cascadePanes": True,
                                           "dtOpts": {"select": {"style": "multi"}}},
                              column_filters="footer")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body {{ font-family: sans-serif; margin: 1em; }} p {{ max-width: 60em; }}
tfoot input {{ width: 100%; min-width: 3em; box-sizing: border-box; }}
table.dataTable th, table.dataTable td {{ padding: 3px 6px; }}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>One row per measurement: the median of the repeats with min and max, in milliseconds.
<b>Filter</b>: click values in the lists of experiments, backends, n and caches to keep only
those rows (several values of a list: any of them; several lists: all of them); type in a box
under a column to keep rows containing that text, or in Search for any column.
<b>Sort</b>: click a heading (shift-click adds a second column). The <code>numpy</code> rows
are np.save / np.load of the same arrays: the limit.</p>
{generate_init_offline_itables_html(bundle)}
{table}
</body></html>
"""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
