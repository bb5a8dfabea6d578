"""`flm data tokenize`: clean text (CLEAN/<source>/*.jsonl.zst) -> token shards (TOKENS/<source>/*.arrow).

Each source's input files are grouped, in name order, into output shards of about
`shard_input_bytes` compressed input (~1 GiB of uint32 tokens for zstd'd text). The unit of work is
one input file: a worker process encodes it into a piece (`<source>/.pieces/`), and when every piece
of a shard is done the parent concatenates them, in order, into the shard. So workers stay busy
however few shards a source has, and the output does not depend on the number of workers.

Resuming: files appear under their final names only when complete, and the parent (the only writer
of bookkeeping) records each finished piece and shard in `<source>/.progress.jsonl`. A rerun keeps
what was recorded with the same inputs and tokenizer and redoes the rest; manifest.json is written
once every shard of a source is done.

One module per job: tokenizer_training (train a tokenizer on the clean corpus), plan (which input
files make which shard), outcome (what encoding produced), encode (one input file -> one piece;
pieces -> one shard), bookkeeping (the resume log and manifests), pool (encoding the pieces left
to do, in worker processes) and corpus (the whole run and its result).
"""

from flm.pipelines.tokenize.corpus import VERIFY_CHARS, SourceSummary, TokenizeResult, tokenize_corpus
from flm.pipelines.tokenize.encode import tokenize_file
from flm.pipelines.tokenize.outcome import Outcome
from flm.pipelines.tokenize.plan import ShardTask, plan_shards
from flm.pipelines.tokenize.pool import TokenizeError
from flm.pipelines.tokenize.tokenizer_training import train_from_clean

__all__ = ["VERIFY_CHARS", "Outcome", "ShardTask", "SourceSummary", "TokenizeError", "TokenizeResult", "plan_shards",
           "tokenize_corpus", "tokenize_file", "train_from_clean"]
