"""`make bench`: the performance figures of issue 5, measured against references taken in the same run."""
