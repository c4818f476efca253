"""Reporting: everything after the timing jobs, reading only the merged table.

stats (merge, medians and ranges), summary (summary.md), plots, table (summary.html),
headline (the report's landing page), publish (a run copied into docs/results and the README).
"""
