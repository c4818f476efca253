"""What every experiment shares: the tidy row, verification, and writing a job's CSV."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..images import ImageList

COLUMNS = ["experiment", "backend", "client", "n", "images", "repeat", "seconds", "cache", "peak_rss_bytes", "rss_before_bytes",
           "bytes_apparent", "bytes_allocated", "files", "verified", "dataset",
           "image_bytes", "options", "encoding", "psnr_db",
           # the access-pattern experiments (empty elsewhere)
           "order", "variant", "loader", "workers", "batch_size", "k", "p50_ms", "p95_ms", "p99_ms", "mean_ms",
           # shuffle measures of an epoch's order (bench/shuffle.py)
           "shuffle_buffer", "shuffle_block", "same_block", "same_block_uniform", "distance_ratio",
           # where the store was read (bench/tiers.py): the tier, its limits, its probe, what each
           # pass read from the device and the tier's floor for that (empty for local rows)
           "tier", "tier_read_mib_s", "tier_read_iops", "tier_cache", "tier_path", "tier_fs", "tier_device", "read_ahead_kb",
           "probe_read_mib_s", "probe_read_iops", "probe_seq_device_mib", "probe_rand_device_ios",
           "device_bytes", "device_ios", "floor_s", "x_floor", "limit_raises"]


class VerificationError(AssertionError):
    pass


def _row(experiment, backend, n, repeat, seconds, cache, peak, before, usage, verified, dataset, options, where,
         image_bytes, images=None, **extra):
    """One timed call: `n` images in the store, `images` of them read or written (default all);
    image_bytes: pixels per image (the mean, when they differ)."""
    return {"experiment": experiment, "backend": backend, "n": n, "images": n if images is None else images,
            "repeat": repeat, "seconds": seconds,
            "cache": cache, "peak_rss_bytes": peak, "rss_before_bytes": before,
            **usage, "verified": verified,
            "dataset": dataset, "image_bytes": image_bytes, "options": repr(options), "tier": "local", **extra,
            **where}


def latency_columns(seconds) -> dict:
    """p50/p95/p99 and mean of a sample of latencies, in milliseconds."""
    ms = np.asarray(seconds, float) * 1e3
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "mean_ms": ms.mean()}


def _check(what: str, got, expected) -> None:
    if isinstance(got, ImageList) or isinstance(expected, ImageList):
        if (not isinstance(got, ImageList) or not isinstance(expected, ImageList) or len(got) != len(expected)
                or not np.array_equal(got.shapes, expected.shapes)):
            raise VerificationError(f"{what}: what was read differs in number or shapes from what was written")
        got, expected = got.flat(), expected.flat()
    got, expected = np.asarray(got), np.asarray(expected)
    if (got.shape == expected.shape and got.dtype == expected.dtype == np.uint8 and got.nbytes % 8 == 0
            and got.flags.c_contiguous and expected.flags.c_contiguous):
        # eight pixels per comparison: the same answer, several times faster on a store's worth
        got, expected = got.reshape(-1).view(np.uint64), expected.reshape(-1).view(np.uint64)
    if not np.array_equal(got, expected):
        raise VerificationError(f"{what}: what was read differs from what was written")


def write_csv(rows: list[dict], path, columns: list[str] = COLUMNS) -> None:
    """The rows as CSV (`columns` first, then any others), written through a temporary sibling.
    The csv module, not pandas: a timing job then starts half a second sooner (pandas' import),
    which over a run's hundred-odd jobs is most of a minute."""
    import csv

    path = Path(path)
    extra = [c for r in rows for c in r if c not in columns]
    columns = columns + list(dict.fromkeys(extra))
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow(["" if r.get(c) is None or (isinstance(r.get(c), float) and r[c] != r[c]) else r[c]
                        for c in columns])
    tmp.replace(path)


# The faults of integrity.csv's `fault` column (bench/faults.py does them): damage done to a
# store's files, and events around a store.
DAMAGE = ("flipped byte", "truncated file", "deleted file", "changed label", "manifest mismatch")
EVENTS = ("killed store", "concurrent overwrite", "disk full")


def _coding(b, expected, psnr) -> dict:
    """The columns that say what a store keeps: its coding ("raw", "png-l6", "jpeg-q90",
    "source") and, for lossy ones, the PSNR of what it reads back against the source (inf:
    exactly the decoded source, as for a source store)."""
    from ..backends import coding

    lossy = b.encoding in ("jpeg", "source")
    return {"encoding": coding(b), "psnr_db": (psnr if psnr is not None else float("inf")) if lossy else None}
