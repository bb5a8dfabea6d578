"""How many documents a step handles at a time.

A document used to pass through every step before the next was read, so each step found its
model and tables (fastText's, the filters' regexes and word lists) evicted from the CPU caches
by the steps after it. Steps that take documents a batch at a time keep them warm: on the sample
this alone made the filter pass about a tenth faster.
"""

BATCH_DOCS = 256
"""Documents per batch: large enough to amortise a step's warm-up, small next to a task's memory."""
