"""`flm data download`: fetch The Pile or WuDao into `<out>/<source>/*.jsonl.zst`, or list what is there."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from flm.cli.render import console, emit_json, fail, progress_bars
from flm.pipelines.download import Batch, Download, Policy, fetch_all
from flm.pipelines.sources import PILE, SOURCES, WUDAO, Mirror, Source, get_source, local_state
from flm.pipelines.wudao import REPORT_NAME, SHARD_PREFIX, convert


def download(
    source: Annotated[str | None, typer.Argument(help="pile or wudao.", show_default=False)] = None,
    files: Annotated[str | None, typer.Option(
        "--files", help="Pile files, comma-separated: 00..29 (train), val, test.")] = None,
    all_files: Annotated[bool, typer.Option("--all", help="Every Pile file (30 train shards, val, test).")] = False,
    mirror: Annotated[str | None, typer.Option(
        "--mirror", help="A mirror name from --list, or a base URL (http(s)://, file://, or a folder).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Raw-data root: files go to OUT/<source>/.")] = Path("data/raw"),
    workers: Annotated[int, typer.Option("--workers", min=1, help="Parallel downloads.")] = 4,
    retries: Annotated[int, typer.Option("--retries", min=0, help="Retries per file on network errors.")] = 5,
    url: Annotated[str | None, typer.Option(
        "--url", help="WuDao: your download link (after accepting BAAI's licence).")] = None,
    from_: Annotated[Path | None, typer.Option(
        "--from", help="WuDao: a local .json/.jsonl file, archive (.zip, .tar.gz, .rar) or folder.")] = None,
    accept_licence: Annotated[bool, typer.Option(
        "--accept-licence", help="WuDao --url: confirm you accepted the WuDaoCorpora licence.")] = False,
    header: Annotated[list[str] | None, typer.Option(
        "--header", help="Extra HTTP header for --url, e.g. 'Authorization: Bearer TOKEN'.")] = None,
    sha256: Annotated[str | None, typer.Option("--sha256", help="WuDao --url: expected sha256 of the archive.")] = None,
    list_: Annotated[bool, typer.Option("--list", help="Show sources, files, sizes and what is on disk.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
) -> None:
    """Fetch The Pile or WuDao: resumable, checksummed, parallel, from mirrors or local files."""
    try:
        if list_:
            _list([get_source(source)] if source else list(SOURCES.values()), out, json_)
        elif source is None:
            fail("name a source (pile or wudao), or use --list")
        elif get_source(source) is PILE:
            _reject_flags("pile", {"--url": url, "--from": from_, "--sha256": sha256, "--header": header,
                                   "--accept-licence": accept_licence})
            _pile(files, all_files, mirror, out, workers, Policy(retries=retries), json_)
        else:
            _reject_flags("wudao", {"--files": files, "--all": all_files, "--mirror": mirror})
            _wudao(url, from_, accept_licence, header or [], sha256, out, Policy(retries=retries), json_)
    except KeyboardInterrupt:
        fail("interrupted: partial downloads are kept as *.part; run the same command again to resume", code=130)


def _reject_flags(source: str, flags: dict[str, Any]) -> None:
    """Flags of the other source would be silently ignored: say so instead."""
    given = [name for name, value in flags.items() if value]
    if given:
        fail(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to {source}")


def _resolve_mirror(src: Source, mirror: str | None) -> tuple[str, str, Mirror | None]:
    """(label, base URL, registry mirror or None for a user-given URL)."""
    if mirror is None:
        m = src.default_mirror
        assert m is not None
        return m.name, m.base_url, m
    if "://" not in mirror and not Path(mirror).exists():
        m = src.mirror(mirror)
        return m.name, m.base_url, m
    known = next((m for m in src.mirrors if m.base_url.rstrip("/") == mirror.rstrip("/")), None)
    return (known.name if known else mirror), mirror, known


def _join(base: str, path: str) -> str:
    return base.rstrip("/") + "/" + path if "://" in base else str(Path(base) / path)


def _pile(files: str | None, all_files: bool, mirror: str | None, out: Path, workers: int, policy: Policy,
          json_: bool) -> None:
    if files and all_files:
        fail("give either --files or --all, not both")
    if not files and not all_files:
        approx = sum(f.approx_bytes for f in PILE.files) / 1e9
        fail(f"choose what to fetch: --files 00,01 (train shards 00..29, val, test) or --all "
             f"({len(PILE.files)} files, about {approx:,.0f} GB)")
    chosen = PILE.select(None if all_files else files.split(","))  # type: ignore[union-attr]
    name, base, known = _resolve_mirror(PILE, mirror)
    downloads = []
    for f in chosen:
        digest = known.digests.get(f.path) if known else None
        downloads.append(Download(url=_join(base, f.path), dest=out / PILE.name / f.local_name,
                                  size=digest.size if digest else None, sha256=digest.sha256 if digest else None,
                                  approx_size=f.approx_bytes, label=f"pile/{f.local_name}"))
    batch = _fetch(downloads, workers, policy, json_)
    result = {"source": "pile", "mirror": name, "out": str(out / PILE.name), **_batch_dict(batch)}
    if json_:
        emit_json(result)
    else:
        _print_batch(batch)
    _fail_on(batch)


def _fetch(downloads: list[Download], workers: int, policy: Policy, json_: bool) -> Batch:
    with progress_bars(bytes_mode=True, enabled=not json_) as bars:
        return fetch_all(downloads, workers=workers, policy=policy, progress=bars)


def _batch_dict(batch: Batch) -> dict[str, Any]:
    return {
        "files": [{"url": r.url, "path": str(r.dest), "bytes": r.bytes, "sha256": r.sha256, "status": r.status,
                   "verified": r.verified, "resumed_from": r.resumed_from, "attempts": r.attempts,
                   "corrupt_copies": r.corrupt} for r in batch.results],
        "bytes": sum(r.bytes for r in batch.results),
        "errors": [{"url": d.url, "error": str(e)} for d, e in batch.failures],
    }


def _print_batch(batch: Batch) -> None:
    table = Table(title="downloaded", title_justify="left")
    for col in ("file", "bytes", "status", "check"):
        table.add_column(col, justify="right" if col == "bytes" else "left")
    for r in batch.results:
        check = "sha256 matches the published one" if r.verified else "sha256 recorded (none known for this mirror)"
        status = r.status + (f" (resumed at {r.resumed_from:,})" if r.resumed_from else "")
        table.add_row(str(r.dest), f"{r.bytes:,}", status, check)
    console.print(table)


def _fail_on(batch: Batch) -> None:
    if batch.failures:
        lines = "\n".join(f"  {e}" for _, e in batch.failures)
        fail(f"{len(batch.failures)} of {len(batch.failures) + len(batch.results)} files failed "
             f"(finished files are kept; rerun to resume the rest):\n{lines}")


def _wudao(url: str | None, from_: Path | None, accept_licence: bool, headers: list[str], sha256: str | None,
           out: Path, policy: Policy, json_: bool) -> None:
    if url and from_:
        fail("give either --url or --from, not both")
    if not url and not from_:
        fail(f"WuDao has no public mirror: {WUDAO.obtain}")
    batch = None
    if url:
        if not accept_licence:
            fail(f"WuDao is distributed under {WUDAO.licence.split(',')[0]}; pass --accept-licence to confirm "
                 "you have accepted it for this download")
        name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name or "wudao-download"
        dl = Download(url=url, dest=out / "_downloads" / "wudao" / name, sha256=sha256,
                      headers=_parse_headers(headers), label=f"wudao/{name}")
        batch = _fetch([dl], 1, policy, json_)
        _fail_on(batch)
        from_ = dl.dest
    assert from_ is not None
    with progress_bars(bytes_mode=True, enabled=not json_) as bars:
        report = convert(from_, out / WUDAO.name, progress=bars)
    result = {"source": "wudao", **report.to_dict(), **({"download": _batch_dict(batch)} if batch else {})}
    if json_:
        emit_json(result)
        return
    console.print(f"wudao: {report.docs:,} documents from {report.files} files -> {len(report.shards)} shards "
                  f"in {report.out_dir}", highlight=False)
    if report.malformed_count:
        console.print(f"[yellow]{report.malformed_count:,} malformed records skipped[/] (all listed in "
                      f"{Path(report.out_dir) / REPORT_NAME}):", highlight=False)
        for m in report.malformed[:10]:
            console.print(f"  {m.file} record {m.index}: {m.reason}", highlight=False)


def _parse_headers(headers: list[str]) -> dict[str, str]:
    parsed = {}
    for h in headers:
        key, sep, value = h.partition(":")
        if not sep or not key.strip():
            fail(f"--header must look like 'Name: value'; got {h!r}")
        parsed[key.strip()] = value.strip()
    return parsed


def _list(sources: list[Source], out: Path, json_: bool) -> None:
    data = [_source_listing(s, out) for s in sources]
    if json_:
        emit_json({"out": str(out), "sources": data})
        return
    table = Table(title=f"corpora under {out}", title_justify="left")
    for col in ("source", "file", "size", "on disk", "state"):
        table.add_column(col, justify="right" if col in ("size", "on disk") else "left")
    for s in data:
        for f in s["files"]:
            size = f"{f['size']:,}" if f["size"] else f"≈{f['approx_size'] / 1e9:,.2f} GB"
            on_disk = f"{f['bytes']:,}" if f["bytes"] is not None else (
                f"{f['part_bytes']:,} .part" if f["part_bytes"] else "-")
            table.add_row(s["name"], f["name"], size, on_disk, _state_text(f))
        if s["name"] == WUDAO.name:
            w = s["converted"]
            state = f"[green]{w['docs']:,} docs in {w['shards']} shards[/]" if w["shards"] else "missing"
            state += f", {w['malformed']:,} malformed skipped" if w["malformed"] else ""
            table.add_row(s["name"], f"{SHARD_PREFIX}*.jsonl.zst", "-", "-", state)
    console.print(table)
    for s in data:
        console.print(f"[bold]{s['name']}[/]: {s['description']}. Arrives as {s['arrives_as']}.", highlight=False)
        for m in s["mirrors"]:
            console.print(f"  mirror [cyan]{m['name']}[/] {m['base_url']} — {m['note']}", highlight=False)
        if s["obtain"]:
            console.print(f"  to obtain: {s['obtain']}", highlight=False)


def _state_text(f: dict[str, Any]) -> str:
    return {
        "verified": f"[green]verified[/] (sha256 published by {f['verified_by']})",
        "recorded": "complete (sha256 recorded; none published for it)",
        "unchecked": "[yellow]on disk, not checked[/] (rerun download to verify)",
        "partial": "[yellow]partial[/] (rerun to resume)",
        "missing": "missing",
    }[f["state"]]


def _source_listing(s: Source, out: Path) -> dict[str, Any]:
    files = []
    for f in s.files:
        st = local_state(s, f, out)
        published = s.published_digests(f)
        default = published.get(s.default_mirror.name) if s.default_mirror else None
        files.append({"name": f.key, "path": f.path, "size": default.size if default else None,
                      "approx_size": f.approx_bytes,
                      "published": {m: {"sha256": d.sha256, "size": d.size, "where": d.where}
                                    for m, d in published.items()},
                      "local_path": st.path, "bytes": st.bytes, "part_bytes": st.part_bytes, "state": st.state,
                      "verified_by": st.verified_by})
    listing: dict[str, Any] = {
        "name": s.name, "description": s.description, "arrives_as": s.arrives_as, "licence": s.licence,
        "obtain": s.obtain, "files": files,
        "mirrors": [{"name": m.name, "base_url": m.base_url, "note": m.note, "published_checksums": len(m.digests)}
                    for m in s.mirrors],
    }
    if s is WUDAO:
        listing["converted"] = _wudao_listing(out / s.name)
    return listing


def _wudao_listing(folder: Path) -> dict[str, Any]:
    shards = sorted(folder.glob(f"{SHARD_PREFIX}*.jsonl.zst"))
    report_path = folder / REPORT_NAME
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    return {"shards": len(shards), "bytes": sum(p.stat().st_size for p in shards),
            "docs": report.get("docs", 0), "malformed": report.get("malformed_count", 0)}
