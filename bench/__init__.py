"""`make bench`: the performance figures, measured against references taken in the same run."""
