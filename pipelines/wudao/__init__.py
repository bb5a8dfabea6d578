"""WuDao as published (JSON-array files, usually inside one archive) -> raw jsonl.zst shards.

WuDaoCorpora 2.0 files are JSON arrays of `{id, uniqueKey, titleUkey, dataType, title, content}`,
a few hundred MB each, shipped inside a .rar (some redistributions use .zip, .tar.gz or JSON
Lines). We stream them (never a whole file in memory), keep `id`, `dataType`, `title` and
`content` unchanged, and write shards of 16384 documents (Open-Llama's convention) that
`flm data prepare` reads like any other raw jsonl.zst. A bad record (not an object, no string
`content`) is skipped and reported with its file and index; a file that cannot be parsed past some
point is reported the same way, and the conversion goes on with the next file.

One module per job: archives (the JSON files inside files, folders and archives), json_stream
(a streaming parser of JSON arrays and JSON Lines), shard_writer (numbered jsonl.zst shards) and
conversion (the driver and its report).
"""

from flm.pipelines.wudao.archives import Member, WuDaoError, iter_members
from flm.pipelines.wudao.conversion import MAX_EXAMPLES, REPORT_NAME, ConversionReport, Malformed, convert
from flm.pipelines.wudao.json_stream import JsonStreamError, iter_json_values
from flm.pipelines.wudao.shard_writer import SHARD_DOCS, SHARD_PREFIX

__all__ = ["MAX_EXAMPLES", "REPORT_NAME", "SHARD_DOCS", "SHARD_PREFIX", "ConversionReport", "JsonStreamError",
           "Malformed", "Member", "WuDaoError", "convert", "iter_json_values", "iter_members"]
