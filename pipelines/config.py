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
    enabled: bool = True
    unicode_form: Literal["NFC", "NFKC", "none"] = "NFC"
    """NFC keeps full-width CJK punctuation; NFKC would turn '，' into ','."""
    strip_control: bool = True
    """Drop control and invisible format characters (zero-width spaces, BOM, soft hyphens)."""
    fix_whitespace: bool = True
    """Unify line breaks and exotic spaces, strip trailing spaces, squeeze 3+ newlines to 2 (indentation kept)."""


@dataclass
class LangIdConfig:
    enabled: bool = True
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
    max_doc_words: int | None = 100000
    min_avg_word_length: int | None = 3
    max_avg_word_length: int | None = 10
    max_symbol_word_ratio: float | None = 0.1
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    max_non_alpha_words_ratio: float | None = 0.8
    """Despite the name: the least share of words holding a letter. It drops code; keep it off there."""
    min_stop_words: int | None = 2


@dataclass
class GopherRepetitionConfig:
    """datatrove's GopherRepetitionFilter: duplicated lines, paragraphs and word n-grams."""

    dup_line_frac: float | None = 0.3
    dup_para_frac: float | None = 0.3
    dup_line_char_frac: float | None = 0.2
    dup_para_char_frac: float | None = 0.2
    top_n_grams: list[tuple[int, float]] = field(default_factory=lambda: [(2, 0.2), (3, 0.18), (4, 0.16)])
    dup_n_grams: list[tuple[int, float]] = field(
        default_factory=lambda: [(5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)])


@dataclass
class C4Config:
    """datatrove's C4QualityFilter: drops lines (no terminal punctuation, javascript, policy) and bad pages."""

    filter_no_terminal_punct: bool = True
    min_num_sentences: int = 5
    min_words_per_line: int = 3
    max_word_length: int = 1000
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True


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
    short_line_chars: int = 8
    """Lines shorter than this many non-space characters count as short (menus, tag clouds)."""


@dataclass
class CharRepetitionConfig:
    """Gopher-style repetition measured on characters, for scripts written without spaces."""

    dup_line_frac: float | None = 0.3
    dup_line_char_frac: float | None = 0.2
    top_n_grams: list[tuple[int, float]] = field(default_factory=lambda: [(2, 0.2), (3, 0.18), (4, 0.16)])
    dup_n_grams: list[tuple[int, float]] = field(default_factory=lambda: [(8, 0.2), (12, 0.15), (16, 0.12)])
    """Character n-grams: a Chinese word is 1.5-2 characters, so Gopher's 5-10 words are about 8-16."""


@dataclass
class CodeQualityConfig:
    """Rules for code and technical text (after The Stack / StarCoder): shape, not vocabulary."""

    min_chars: int = 100
    max_line_length: int | None = 1000
    """Longest line allowed (minified code, data blobs); None: no limit (LaTeX paragraphs are long)."""
    max_mean_line_length: float | None = 100.0
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


@dataclass
class ProfileConfig:
    """The filters one group of subsets goes through, cheapest first, in this order."""

    min_lang_score: float | None = 0.65
    """Drop documents whose detected language is not allowed or scores lower; None: no language check."""
    boilerplate: BoilerplateConfig | None = None
    code: CodeQualityConfig | None = None
    chinese: ChineseQualityConfig | None = None
    char_repetition: CharRepetitionConfig | None = None
    gopher_repetition: GopherRepetitionConfig | None = None
    gopher_quality: GopherQualityConfig | None = None
    c4: C4Config | None = None


@dataclass
class QualityConfig:
    enabled: bool = True
    word_tokenizer: Literal["fast", "spacy"] = "fast"
    """Word splitting of the Gopher and C4 filters: fast (words.py, about 4x faster) or datatrove's spaCy."""
    default_profile: str = "prose"
    routes: dict[str, str] = field(default_factory=dict)
    """Subset name -> profile name; subsets not listed take `default_profile`."""
    profiles: dict[str, ProfileConfig] = field(default_factory=lambda: {"prose": ProfileConfig()})

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
    benchmarks: list[BenchmarkConfig] = field(default_factory=list)
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
    emails: bool = True
    ip_addresses: bool = True
    phone_numbers: bool = True
    id_numbers: bool = True
    """Chinese resident ID numbers (18 characters, birth date and check digit validated)."""
    placeholders: dict[str, str] = field(default_factory=lambda: {
        "email": "<EMAIL>", "ip": "<IP_ADDRESS>", "phone": "<PHONE>", "id_number": "<ID_NUMBER>"})

    def validate(self) -> None:
        missing = {"email", "ip", "phone", "id_number"} - set(self.placeholders)
        if missing:
            raise ValueError(f"pii.placeholders: no placeholder for {', '.join(sorted(missing))}")


@dataclass
class AuditConfig:
    """Write dropped documents with their reason beside the clean output (CLEAN/<source>/dropped/)."""

    enabled: bool = False
    sample: float = 1.0
    """Share of each reason's drops written (1.0: all), chosen by a seeded hash of the document id."""
    seed: int = 0

    def validate(self) -> None:
        if not 0.0 < self.sample <= 1.0:
            raise ValueError(f"audit.sample must be in (0, 1], got {self.sample}")


@dataclass
class ExactDedupConfig:
    enabled: bool = True


@dataclass
class MinhashConfig:
    """datatrove's MinHash stages; `shingle: char` uses character n-grams (needed for Chinese)."""

    enabled: bool = True
    shingle: Literal["char", "word", "auto"] = "char"
    """auto: characters for CJK-heavy documents, words (datatrove's spaCy tokenizer) for the rest."""
    n_grams: int = 7
    num_buckets: int = 20
    hashes_per_bucket: int = 6
    """Bands x rows: similarity about (1/buckets)^(1/rows) is the 50% point (0.61 for 20 x 6)."""
    seed: int = 1

    def validate(self) -> None:
        if min(self.n_grams, self.num_buckets, self.hashes_per_bucket) <= 0:
            raise ValueError("minhash.n_grams, num_buckets and hashes_per_bucket must be positive")


@dataclass
class WriterConfig:
    docs_per_shard: int = 16384
    keep_intermediate: bool = False
    """Keep the filtered-but-not-deduplicated copy and dedup signatures under .datatrove/ after success."""

    def validate(self) -> None:
        if self.docs_per_shard <= 0:
            raise ValueError(f"writer.docs_per_shard must be positive, got {self.docs_per_shard}")


@dataclass
class SlurmConfig:
    partition: str = ""
    time: str = "24:00:00"
    cpus_per_task: int = 1
    mem_per_cpu_gb: int = 2
    qos: str = "normal"
    venv_path: str = ""
    """Activate script sourced on the nodes (`.../bin/activate`); empty: that of the venv running `flm`."""
    job_name: str = "flm-prepare"
    sbatch_args: dict[str, str] = field(default_factory=dict)


@dataclass
class RayConfig:
    cpus_per_task: int = 1
    mem_per_cpu_gb: float = 2.0


@dataclass
class ExecutorConfig:
    kind: Literal["local", "slurm", "ray"] = "local"
    tasks: int = 0
    """Tasks of the per-document stages; 0: one per input file. Fixed for the life of an output folder."""
    workers: int = 0
    """Tasks run at once (local); 0: as many as CPU cores, at most `tasks`."""
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def validate(self) -> None:
        if self.tasks < 0 or self.workers < 0:
            raise ValueError("executor.tasks and executor.workers must be >= 0 (0 means automatic)")
        if self.kind == "slurm" and not self.slurm.partition:
            raise ValueError("the slurm executor needs a partition: --set executor.slurm.partition=NAME")


@dataclass
class PipelineConfig:
    source: SourceName = "pile"
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
