"""The benchmark harness: experiments, each returning tidy rows, one per timed repeat
(rows.COLUMNS), and what they are built on. Import the modules themselves:

- many: the article's store_many / read_many / single-image experiments, and the same two for
  np.save / np.load of the same arrays (the limit every format is compared with); an encoded
  store's read is also timed against Pillow decoding the same bytes from memory (its limit).
- access: what training does: shuffled epochs (through loader, imgbench's own worker-process
  loader) and random single reads.
- integrity: what each backend does under faults (faults: the damage and events done to stores).
- timing: the clock, memory, the page cache and the machine; rows: the columns of timings.csv.
"""
