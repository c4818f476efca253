"""The experiments; each returns tidy rows, one per timed repeat (see common.COLUMNS).

- many: the article's store_many / read_many / single-image experiments.
- access: what training does: shuffled epochs from worker processes, random single reads.
"""
from .access import epoch, random_read
from .common import COLUMNS, VerificationError, write_csv
from .many import empty_trash, read_many, single, store_many

__all__ = ["COLUMNS", "VerificationError", "empty_trash", "epoch", "random_read", "read_many", "single",
           "store_many", "write_csv"]
