"""The benchmark harness: experiments, each returning tidy rows, one per timed repeat
(rows.COLUMNS), and what they are built on (timing, the worker-process loader, faults).

- many: the article's store_many / read_many / single-image experiments, and the same two for
  np.save / np.load of the same arrays (the limit every format is compared with); an encoded
  store's read is also timed against Pillow decoding the same bytes from memory (its limit).
- access: what training does: shuffled epochs from worker processes, random single reads.
- integrity: what each backend does under faults (rows of outcomes, not times).
"""
from .access import epoch, random_read
from .rows import COLUMNS, VerificationError, write_csv
from .integrity import integrity
from .many import LIMIT, empty_trash, limit, read_many, single, store_many

__all__ = ["COLUMNS", "LIMIT", "VerificationError", "empty_trash", "epoch", "integrity", "limit", "random_read", "read_many",
           "single", "store_many", "write_csv"]
