"""`flm data prepare` on datatrove: read, normalize, decontaminate, language id, quality filters, PII redaction,
exact + MinHash dedup, shards; optionally an audit trail of every dropped document.

Entry point: `prepare(configs, input_root, out_root, progress)` (run.py). Stages are assembled from
a `PipelineConfig` (assembly.py) and run by datatrove's executors (executors.py) in a child
process (runner.py).
"""

from flm.pipelines.prepare.run import PrepareResult, SourceResult, prepare
from flm.pipelines.prepare.source_plan import PrepareError

__all__ = ["PrepareError", "PrepareResult", "SourceResult", "prepare"]
