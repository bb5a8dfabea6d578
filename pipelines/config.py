"""Settings of `flm data prepare`: one `PipelineConfig` per source (configs/pipelines/<source>.yaml).

Every stage can be switched off or tuned. Quality filters are grouped into named *profiles* (web,
prose, technical, code, zh, ...) and each subset (Pile's `pile_set_name`, WuDao's `dataType`) is
routed to one, because rules built for web prose destroy code and technical text (datatrove's
default Gopher filters kept 4% of the Python documentation) and word-based rules drop good Chinese.
A `None` filter section means that filter is off for the profile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

SourceName = Literal["pile", "wudao"]
SOURCES: tuple[str, ...] = get_args(SourceName)
"""The corpora `flm data prepare` cleans; the one list the config type and the CLI both use."""


@dataclass
class ReaderConfig:
    """Which raw files of RAW/<source>/ are read (JSONL, zstd-compressed)."""

    patterns: list[str] = field(default_factory=lambda: ["*.jsonl.zst"])
    """Glob patterns relative to RAW/<source>/ ("**/*.jsonl.zst" to include subfolders)."""
    exclude: list[str] = field(default_factory=lambda: [".*", "*.part", "*.tmp"])
    """File names never read (partial downloads, bookkeeping files beside the shards)."""
    limit: int = -1
    """Documents per task at most (-1: all); for quick trials."""

    def validate(self) -> None:
        if not self.patterns:
            raise ValueError("reader.patterns must name at least one glob pattern")


@dataclass
class NormalizeConfig:
    """Text clean-up before any filter sees it, so filters and dedup compare like with like."""

    enabled: bool = True
    """Off: documents go to language id exactly as read."""
    unicode_form: Literal["NFC", "NFKC", "none"] = "NFC"
    """NFC keeps full-width CJK punctuation; NFKC would turn '，' into ','."""
    strip_control: bool = True
    """Drop control and invisible format characters (zero-width spaces, BOM, soft hyphens)."""
    fix_whitespace: bool = True
    """Unify line breaks and exotic spaces, strip trailing spaces, squeeze 3+ newlines to 2 (indentation kept)."""


@dataclass
class LangIdConfig:
    """fastText language identification; each profile's `min_lang_score` decides what drops."""

    enabled: bool = True
    """Off: no language check in any profile, whatever its `min_lang_score`."""
    languages: list[str] = field(default_factory=lambda: ["en"])
    """Allowed ISO codes (fastText lid.176 labels). A profile's `min_lang_score` decides whether it drops."""
    max_chars: int = 2000
    """Characters of each document shown to the model (its cost grows with length, its accuracy does not)."""

    def validate(self) -> None:
        if self.enabled and not self.languages:
            raise ValueError("langid.languages must not be empty when langid is enabled")
        if self.max_chars <= 0:
            raise ValueError(f"langid.max_chars must be positive, got {self.max_chars}")


@dataclass
class GopherQualityConfig:
    """datatrove's GopherQualityFilter (Rae et al. 2021, word-based; English prose)."""

    min_doc_words: int | None = 50
    """Fewest words (fragments, titles); None: no lower bound, as for every None below."""
    max_doc_words: int | None = 100000
    """Most words (dumps, concatenated files)."""
    min_avg_word_length: int | None = 3
    """Shortest mean word length (letter soup, tables of numbers)."""
    max_avg_word_length: int | None = 10
    """Longest mean word length (URLs, base64, glued words)."""
    max_symbol_word_ratio: float | None = 0.1
    """Most '#' and '...' per word (hashtag lists, truncated teasers)."""
    max_bullet_lines_ratio: float | None = 0.9
    """Most lines starting with a bullet (link lists, menus)."""
    max_ellipsis_lines_ratio: float | None = 0.3
    """Most lines ending in an ellipsis (excerpt pages)."""
    max_non_alpha_words_ratio: float | None = 0.8
    """Despite the name: the least share of words holding a letter. It drops code; keep it off there."""
    min_stop_words: int | None = 2
    """Fewest English stop words ('the', 'and', ...): real prose has them, keyword lists do not."""


@dataclass
class GopherRepetitionConfig:
    """datatrove's GopherRepetitionFilter: duplicated lines, paragraphs and word n-grams."""

    dup_line_frac: float | None = 0.3
    """Most share of lines that repeat an earlier line; None: not checked, as for every None below."""
    dup_para_frac: float | None = 0.3
    """Most share of paragraphs that repeat an earlier paragraph."""
    dup_line_char_frac: float | None = 0.2
    """Most share of characters in repeated lines."""
    dup_para_char_frac: float | None = 0.2
    """Most share of characters in repeated paragraphs."""
    top_n_grams: list[tuple[int, float]] = field(default_factory=lambda: [(2, 0.2), (3, 0.18), (4, 0.16)])
    """(n, most share of characters covered by the most frequent word n-gram): spam repeats one phrase."""
    dup_n_grams: list[tuple[int, float]] = field(
        default_factory=lambda: [(5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)])
    """(n, most share of characters covered by word n-grams that occur more than once)."""


@dataclass
class C4Config:
    """datatrove's C4QualityFilter: drops lines (no terminal punctuation, javascript, policy) and bad pages."""

    filter_no_terminal_punct: bool = True
    """Drop lines that do not end in terminal punctuation (menus, buttons, headings)."""
    min_num_sentences: int = 5
    """Drop the page if fewer sentences remain after the line rules."""
    min_words_per_line: int = 3
    """Drop lines with fewer words."""
    max_word_length: int = 1000
    """Drop lines holding a longer word (blobs, minified code)."""
    filter_lorem_ipsum: bool = True
    """Drop pages containing 'lorem ipsum' (templates)."""
    filter_javascript: bool = True
    """Drop lines mentioning javascript ('enable JavaScript to view this page')."""
    filter_curly_bracket: bool = True
    """Drop pages containing '{' (code): keep it off for technical profiles."""
    filter_policy: bool = True
    """Drop lines about cookies, terms of use and privacy policies."""


@dataclass
class ChineseQualityConfig:
    """Character-based rules for Chinese (word-based English rules drop good Chinese text)."""

    min_chars: int = 50
    """Non-space characters at least."""
    min_cjk_ratio: float = 0.3
    """CJK ideographs among non-space characters."""
    min_punct_ratio: float = 0.02
    """CJK punctuation marks (，。！？；：、) per CJK ideograph: navigation and keyword lists have none."""
    max_short_line_ratio: float = 0.7
    """Most share of short lines (see `short_line_chars`)."""
    short_line_chars: int = 8
    """Lines shorter than this many non-space characters count as short (menus, tag clouds)."""


@dataclass
class CharRepetitionConfig:
    """Gopher-style repetition measured on characters, for scripts written without spaces."""

    dup_line_frac: float | None = 0.3
    """Most share of lines that repeat an earlier line; None: not checked, as for every None below."""
    dup_line_char_frac: float | None = 0.2
    """Most share of characters in repeated lines."""
    top_n_grams: list[tuple[int, float]] = field(default_factory=lambda: [(2, 0.2), (3, 0.18), (4, 0.16)])
    """(n, most share of characters covered by the most frequent character n-gram)."""
    dup_n_grams: list[tuple[int, float]] = field(default_factory=lambda: [(8, 0.2), (12, 0.15), (16, 0.12)])
    """Character n-grams: a Chinese word is 1.5-2 characters, so Gopher's 5-10 words are about 8-16."""


@dataclass
class CodeQualityConfig:
    """Rules for code and technical text (after The Stack / StarCoder): shape, not vocabulary."""

    min_chars: int = 100
    """Fewest characters (stubs, empty files)."""
    max_line_length: int | None = 1000
    """Longest line allowed (minified code, data blobs); None: no limit (LaTeX paragraphs are long)."""
    max_mean_line_length: float | None = 100.0
    """Longest mean line length (generated or minified files); None: no limit."""
    min_alnum_ratio: float | None = 0.25
    """Letters and digits among non-space characters."""
    drop_autogenerated: bool = True
    """Drop files whose first lines say they were generated ('auto-generated', 'do not edit')."""


@dataclass
class BoilerplateConfig:
    """Pages made mostly of navigation, cookie and login lines, in any language."""

    max_line_ratio: float = 0.3
    """Most lines (of those with text) that may contain a boilerplate phrase."""
    phrases: list[str] = field(default_factory=lambda: [
        "cookie", "javascript", "privacy policy", "terms of use", "terms of service", "all rights reserved",
        "sign up", "sign in", "log in", "subscribe", "click here", "skip to content", "powered by",
        "版权所有", "免责声明", "登录", "注册", "点击", "返回首页", "返回顶部", "上一篇", "下一篇", "扫一扫",
        "关注我们", "责任编辑",
    ])
    """Phrases that mark a line as boilerplate, matched as substrings of the lowercased line."""


@dataclass
class ProfileConfig:
    """The filters one group of subsets goes through, cheapest first, in this order."""

    min_lang_score: float | None = 0.65
    """Drop documents whose detected language is not allowed or scores lower; None: no language check."""
    boilerplate: BoilerplateConfig | None = None
    """Navigation, cookie and login pages; None (as for every filter below): off for this profile."""
    code: CodeQualityConfig | None = None
    """Shape rules for code and technical text."""
    chinese: ChineseQualityConfig | None = None
    """Character-based rules for Chinese."""
    char_repetition: CharRepetitionConfig | None = None
    """Repetition measured on characters (Chinese)."""
    gopher_repetition: GopherRepetitionConfig | None = None
    """Repetition measured on words (English)."""
    gopher_quality: GopherQualityConfig | None = None
    """Word statistics of English prose."""
    c4: C4Config | None = None
    """C4's line and page rules for web text."""


@dataclass
class QualityConfig:
    """Quality filters, grouped into profiles; each subset is routed to one profile."""

    enabled: bool = True
    """Off: no quality filter runs (language id still does)."""
    word_tokenizer: Literal["fast", "spacy"] = "fast"
    """Word splitting of the Gopher and C4 filters: fast (words.py, about 4x faster) or datatrove's spaCy."""
    default_profile: str = "prose"
    """The profile of subsets that `routes` does not name."""
    routes: dict[str, str] = field(default_factory=dict)
    """Subset name -> profile name; subsets not listed take `default_profile`."""
    profiles: dict[str, ProfileConfig] = field(default_factory=lambda: {"prose": ProfileConfig()})
    """Profile name -> its filters."""

    def validate(self) -> None:
        names = set(self.profiles)
        if self.default_profile not in names:
            raise ValueError(f"quality.default_profile {self.default_profile!r} is not a profile; "
                             f"profiles: {', '.join(sorted(names))}")
        for subset, profile in self.routes.items():
            if profile not in names:
                raise ValueError(f"quality.routes.{subset}: {profile!r} is not a profile; "
                                 f"profiles: {', '.join(sorted(names))}")


@dataclass
class BenchmarkConfig:
    """One evaluation set: a local JSONL (.jsonl, .jsonl.zst), Parquet or CSV file and the fields holding its text."""

    name: str = ""
    """Counted as decontam/<name>; the file's stem when empty."""
    path: str = ""
    """The evaluation file; relative paths are taken from the working directory."""
    fields: list[str] = field(default_factory=lambda: ["text"])
    """Fields whose values (strings, or lists of strings) make up an item's text, joined by newlines."""
    id_field: str = ""
    """Field naming each item in the report; empty: its line (row) number."""
    language: Literal["auto", "en", "zh"] = "auto"
    """en: word n-grams; zh: character n-grams; auto: characters for items that are mostly CJK ideographs."""

    def validate(self) -> None:
        if not self.path:
            raise ValueError("decontam.benchmarks: each benchmark needs a path")
        if not self.fields:
            raise ValueError(f"decontam.benchmarks ({self.path}): fields must name at least one field")


@dataclass
class DecontamConfig:
    """Drop training documents that share an n-gram with an evaluation item (GPT-3's 13-gram rule)."""

    enabled: bool = False
    """Off by default: it needs evaluation sets, which flm does not download."""
    benchmarks: list[BenchmarkConfig] = field(default_factory=list)
    """The evaluation sets to check against, each counted under its own name."""
    word_ngrams: int = 13
    """Words per n-gram for word-based items (lowercased, punctuation removed)."""
    char_ngrams: int = 20
    """Characters per n-gram for Chinese items (whitespace and punctuation removed): a word is 1.5-2 characters."""
    min_item_units: int = 8
    """An item shorter than one n-gram is matched whole if it holds at least this many words (or characters)."""

    def validate(self) -> None:
        if min(self.word_ngrams, self.char_ngrams, self.min_item_units) <= 0:
            raise ValueError("decontam.word_ngrams, char_ngrams and min_item_units must be positive")
        if self.enabled and not self.benchmarks:
            raise ValueError("decontam is enabled but names no benchmarks (decontam.benchmarks: [{path, fields}])")
        names = [b.name or b.path.rsplit("/", 1)[-1].split(".", 1)[0] for b in self.benchmarks]
        if len(set(names)) != len(names):
            raise ValueError(f"decontam.benchmarks: two benchmarks share a name ({', '.join(names)})")


@dataclass
class PiiConfig:
    """Replace personal data by placeholders: emails, IP addresses, phone numbers, Chinese resident ID numbers."""

    enabled: bool = True
    """Off: no kind is redacted, whatever the switches below say."""
    emails: bool = True
    """user@example.com."""
    ip_addresses: bool = True
    """IPv4 and IPv6 addresses (dotted version numbers are told apart by their context)."""
    phone_numbers: bool = True
    """International (+NN ...) and Chinese (mobile 1xx xxxx xxxx, landline 0xx-xxxxxxxx) numbers."""
    id_numbers: bool = True
    """Chinese resident ID numbers (18 characters, birth date and check digit validated)."""
    placeholders: dict[str, str] = field(default_factory=lambda: {
        "email": "<EMAIL>", "ip": "<IP_ADDRESS>", "phone": "<PHONE>", "id_number": "<ID_NUMBER>"})
    """Kind -> the text that replaces it (email, ip, phone, id_number)."""

    def validate(self) -> None:
        missing = {"email", "ip", "phone", "id_number"} - set(self.placeholders)
        if missing:
            raise ValueError(f"pii.placeholders: no placeholder for {', '.join(sorted(missing))}")


@dataclass
class AuditConfig:
    """Write dropped documents with their reason beside the clean output (CLEAN/<source>/dropped/)."""

    enabled: bool = False
    """Off by default: a full audit writes every dropped document a second time."""
    sample: float = 1.0
    """Share of each reason's drops written (1.0: all), chosen by a seeded hash of the document id."""
    seed: int = 0
    """Seed of that hash: the same seed samples the same documents on every run."""

    def validate(self) -> None:
        if not 0.0 < self.sample <= 1.0:
            raise ValueError(f"audit.sample must be in (0, 1], got {self.sample}")


@dataclass
class ExactDedupConfig:
    """Drop documents whose normalized text is identical to one kept earlier (cheaper than MinHash, run first)."""

    enabled: bool = True
    """Off: only MinHash removes duplicates."""


@dataclass
class MinhashConfig:
    """datatrove's MinHash stages; `shingle: char` uses character n-grams (needed for Chinese)."""

    enabled: bool = True
    """Off: near-duplicates are kept."""
    shingle: Literal["char", "word", "auto"] = "char"
    """auto: characters for CJK-heavy documents, words (datatrove's spaCy tokenizer) for the rest."""
    n_grams: int = 7
    """Shingle length, in characters or words (see `shingle`)."""
    num_buckets: int = 20
    """LSH bands: documents agreeing on every hash of one band are candidates."""
    hashes_per_bucket: int = 6
    """Bands x rows: similarity about (1/buckets)^(1/rows) is the 50% point (0.61 for 20 x 6)."""
    seed: int = 1
    """Seed of the hash functions: one seed for the whole corpus, or duplicates across runs are missed."""

    def validate(self) -> None:
        if min(self.n_grams, self.num_buckets, self.hashes_per_bucket) <= 0:
            raise ValueError("minhash.n_grams, num_buckets and hashes_per_bucket must be positive")


@dataclass
class WriterConfig:
    """The clean output: CLEAN/<source>/*.jsonl.zst."""

    docs_per_shard: int = 16384
    """Documents per output shard (FLM-101B's reshard size)."""
    keep_intermediate: bool = False
    """Keep the filtered-but-not-deduplicated copy and dedup signatures under .datatrove/ after success."""

    def validate(self) -> None:
        if self.docs_per_shard <= 0:
            raise ValueError(f"writer.docs_per_shard must be positive, got {self.docs_per_shard}")


@dataclass
class SlurmConfig:
    """sbatch settings of the jobs the slurm executor submits."""

    partition: str = ""
    """Partition to submit to (required for this executor)."""
    time: str = "24:00:00"
    """Time limit of each job (sbatch --time)."""
    cpus_per_task: int = 1
    """CPUs of each task."""
    mem_per_cpu_gb: int = 2
    """Memory per CPU in GB."""
    qos: str = "normal"
    """Quality of service (sbatch --qos)."""
    venv_path: str = ""
    """Activate script sourced on the nodes (`.../bin/activate`); empty: that of the venv running `flm`."""
    job_name: str = "flm-prepare"
    """Prefix of the jobs' names in squeue."""
    sbatch_args: dict[str, str] = field(default_factory=dict)
    """Further sbatch options, e.g. {account: NAME, constraint: cpu}."""


@dataclass
class RayConfig:
    """Resources each task asks of the Ray cluster."""

    cpus_per_task: int = 1
    """CPUs reserved per task."""
    mem_per_cpu_gb: float = 2.0
    """Memory per CPU in GB."""


@dataclass
class ExecutorConfig:
    """Where the pipeline's tasks run."""

    kind: Literal["local", "slurm", "ray"] = "local"
    """local: processes on this machine; slurm: sbatch jobs; ray: tasks on a running Ray cluster."""
    tasks: int = 0
    """Tasks of the per-document stages; 0: one per input file. Fixed for the life of an output folder."""
    workers: int = 0
    """Tasks run at once (local); 0: as many as CPU cores, at most `tasks`."""
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    """Used when `kind` is slurm."""
    ray: RayConfig = field(default_factory=RayConfig)
    """Used when `kind` is ray."""

    def validate(self) -> None:
        if self.tasks < 0 or self.workers < 0:
            raise ValueError("executor.tasks and executor.workers must be >= 0 (0 means automatic)")
        if self.kind == "slurm" and not self.slurm.partition:
            raise ValueError("the slurm executor needs a partition: --set executor.slurm.partition=NAME")


@dataclass
class PipelineConfig:
    """Settings of `flm data prepare` for one source, stage by stage in the order they run."""

    source: SourceName = "pile"
    """The corpus these settings clean: its raw files are read from RAW/<source>/."""
    reader: ReaderConfig = field(default_factory=ReaderConfig)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    langid: LangIdConfig = field(default_factory=LangIdConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    decontam: DecontamConfig = field(default_factory=DecontamConfig)
    pii: PiiConfig = field(default_factory=PiiConfig)
    exact_dedup: ExactDedupConfig = field(default_factory=ExactDedupConfig)
    minhash: MinhashConfig = field(default_factory=MinhashConfig)
    writer: WriterConfig = field(default_factory=WriterConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
