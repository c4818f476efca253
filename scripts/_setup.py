"""Shared start of every rule script: find the workflow's own imgbench, log to snakemake.log.

Scripts run under plain --cores, in a per-rule conda env and in SLURM jobs on other nodes; in
each case the workflow directory is there (shared file system), so its imgbench is put first
on sys.path whether or not a (possibly older) copy is pip-installed.
"""
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def run(snakemake, main):
    """Call main(snakemake, log) with stderr in the job's log; expected errors end in one line."""
    from imgbench.errors import UserError

    terminal = sys.stderr
    logfile = open(snakemake.log[0], "w", buffering=1) if snakemake.log else None
    if logfile:
        sys.stderr = logfile

    def log(msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    try:
        main(snakemake, log)
    except UserError as e:
        line = f"imgbench error in rule {snakemake.rule}: {e}"
        log(line)
        print(line, file=terminal, flush=True)
        sys.exit(1)
    except Exception:
        traceback.print_exc()
        print(f"imgbench: rule {snakemake.rule} failed; see {snakemake.log[0] if snakemake.log else 'above'}",
              file=terminal, flush=True)
        sys.exit(1)
    finally:
        if logfile:
            sys.stderr = terminal
            logfile.close()


def source(snakemake, n: int):
    """The first n source images (in memory, before any clock starts), labels and files' bytes
    (imgbench.data.dataset.Source), and what a lossy store of them must read back: (source, expected
    or None, PSNR or None), the last two from the job's `reference` input if it has one."""
    from imgbench.data.dataset import load_reference, load_source

    files = dict(snakemake.input.items())
    src = load_source(files, n)
    ref = files.get("reference") or []
    ref = [ref] if isinstance(ref, str) else list(ref)
    if not ref:
        return src, None, None
    expected, psnr = load_reference(ref[0], src)
    return src, expected, psnr


def unique_images(snakemake):
    """The dataset's images before they are repeated (a 4-D array, or an ImageList)."""
    from pathlib import Path

    import numpy as np

    from imgbench.data.folder import load_saved

    if "unique" in snakemake.input.keys():
        return np.load(snakemake.input.unique)
    return load_saved(Path(snakemake.input.shapes).parent).images


def paired_blobs(snakemake, src):
    """For a read timed against Pillow alone: the n images' encoded bytes (from the job's
    `encoded` input, or the files' own for a source store), else None."""
    coding = snakemake.params.paired
    if not coding:
        return None
    if coding == "source":
        return src.sources
    from imgbench.data.dataset import load_blobs

    files = dict(snakemake.input.items())
    data = files["encoded"]
    data = data if isinstance(data, str) else data[0]
    return load_blobs(data, data.removesuffix(".npy") + ".sizes.npy")[src.repeat_index()]
