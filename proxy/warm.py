"""``weaver warm``: fill the cache for a list of pages before visitors ask for them.

The pages come from a file (one URL per line; blank lines and ``#`` comments skipped) or
a sitemap (https://www.sitemaps.org/protocol.html: a ``<urlset>`` of ``<url><loc>``, or a
``<sitemapindex>`` whose ``<sitemap><loc>`` sitemaps are read in turn, one level deep;
gzip-compressed sitemaps too). Each is asked of the running Weaver (``--endpoint``,
default ``server.listen``) with the ``Host`` of its URL, so the entry lands under the key
its visitors will use; a path (``/p/1``) is asked with the endpoint's host.

Every page is read to its end (a fill is stored only once its whole body arrived), at
most ``concurrency`` at a time, each under ``timeout_s``. The answer's
``X-Weaver-Cache`` says what happened: MISS (stored now), HIT/STALE/REVALIDATED/COALESCED
(already cached, or stored by a visitor's request meanwhile); anything else — an error
status, BYPASS (not storable), a timeout, a refused connection — is a failure, named in
the summary with its reason.

A page with suspense slots is asked as a visitor would: its slots are fetched once for a
session nobody opens (dropped when it has been held without a consumer for a minute).
"""

from __future__ import annotations

import asyncio
import gzip
import io
import time
import xml.etree.ElementTree as ElementTree
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TextIO
from urllib.parse import urlsplit

import aiohttp

from weaver.config.errors import WeaverError

MAX_SITEMAP_BYTES = 50 * 1024 * 1024  # the protocol's limit, uncompressed
MAX_SITEMAP_URLS = 50_000  # per sitemap (the protocol's limit)
MAX_SITEMAPS = 1_000  # sitemaps one index may name that are read
MAX_FAILURES_LISTED = 20  # in the summary; the count covers all


class WarmError(WeaverError):
    """The list of pages could not be read (a bad sitemap, an unreadable file)."""


class Outcome(StrEnum):
    STORED = "stored"  # MISS: filled from the origin and stored now
    CACHED = "already cached"  # HIT, STALE, REVALIDATED, COALESCED
    FAILED = "failed"


_CACHED = frozenset({"HIT", "STALE", "REVALIDATED", "COALESCED"})


@dataclass(frozen=True, slots=True)
class Result:
    url: str
    outcome: Outcome
    reason: str = ""  # why it failed


def classify(url: str, status: int, cache: str | None) -> Result:
    """The result of asking ``url``: its status and ``X-Weaver-Cache`` (pure)."""
    if status >= 400:
        return Result(url, Outcome.FAILED, f"HTTP {status}")
    if cache == "MISS":
        return Result(url, Outcome.STORED)
    if cache in _CACHED:
        return Result(url, Outcome.CACHED)
    if cache == "BYPASS":
        return Result(url, Outcome.FAILED, "not storable (X-Weaver-Cache: BYPASS)")
    return Result(url, Outcome.FAILED, f"no cache status (HTTP {status}, {cache or 'none'})")


def read_url_list(text: str) -> list[str]:
    """One URL (or path) per line; blank lines and ``#`` comments are skipped (pure)."""
    urls = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            urls.append(line)
    return urls


@dataclass(frozen=True, slots=True)
class Sitemap:
    urls: tuple[str, ...] = ()  # pages (<urlset>)
    sitemaps: tuple[str, ...] = ()  # more sitemaps (<sitemapindex>)


def parse_sitemap(data: bytes, source: str = "sitemap") -> Sitemap:
    """A sitemap's ``<loc>`` URLs (pure). Gzip is undone (bounded); a DOCTYPE is refused
    (sitemaps have none; it is how entity-expansion bombs come).

    Raises:
        WarmError: not a sitemap, too large, or with too many URLs.
    """
    if data[:2] == b"\x1f\x8b":
        data = _gunzip(data, source)
    if len(data) > MAX_SITEMAP_BYTES:
        raise WarmError(f"{source}: larger than {MAX_SITEMAP_BYTES} bytes")
    if b"<!DOCTYPE" in data[:4096].upper():
        raise WarmError(f"{source}: a DOCTYPE is not allowed in a sitemap")
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        raise WarmError(f"{source}: not XML ({exc})") from None
    kind = _local(root.tag)
    if kind not in ("urlset", "sitemapindex"):
        raise WarmError(f"{source}: expected <urlset> or <sitemapindex>, got <{kind}>")
    locs = []
    for entry in root:
        for child in entry:
            if _local(child.tag) == "loc" and child.text and child.text.strip():
                locs.append(child.text.strip())
        if len(locs) > MAX_SITEMAP_URLS:
            raise WarmError(f"{source}: more than {MAX_SITEMAP_URLS} URLs")
    if kind == "urlset":
        return Sitemap(urls=tuple(locs))
    return Sitemap(sitemaps=tuple(locs))


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _gunzip(data: bytes, source: str) -> bytes:
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as unzipped:
        try:
            out = unzipped.read(MAX_SITEMAP_BYTES + 1)
        except (OSError, EOFError) as exc:
            raise WarmError(f"{source}: bad gzip ({exc})") from None
    if len(out) > MAX_SITEMAP_BYTES:
        raise WarmError(f"{source}: larger than {MAX_SITEMAP_BYTES} bytes uncompressed")
    return out


async def read_sitemap(http: aiohttp.ClientSession, url: str, timeout_s: float) -> list[str]:
    """The page URLs of the sitemap at ``url`` (an index: of its sitemaps, one level)."""
    sitemap = parse_sitemap(await _fetch(http, url, timeout_s), url)
    urls = list(sitemap.urls)
    if len(sitemap.sitemaps) > MAX_SITEMAPS:
        raise WarmError(f"{url}: names more than {MAX_SITEMAPS} sitemaps")
    for child_url in sitemap.sitemaps:
        child = parse_sitemap(await _fetch(http, child_url, timeout_s), child_url)
        if child.sitemaps:
            raise WarmError(f"{child_url}: a sitemap index inside an index")
        urls.extend(child.urls)
    return urls


async def _fetch(http: aiohttp.ClientSession, url: str, timeout_s: float) -> bytes:
    try:
        async with asyncio.timeout(timeout_s), http.get(url) as resp:
            if resp.status != 200:
                raise WarmError(f"{url}: HTTP {resp.status}")
            body = bytearray()
            async for chunk in resp.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > MAX_SITEMAP_BYTES:
                    raise WarmError(f"{url}: larger than {MAX_SITEMAP_BYTES} bytes")
            return bytes(body)
    except TimeoutError:
        raise WarmError(f"{url}: no answer within {timeout_s:g}s") from None
    except aiohttp.ClientError as exc:
        raise WarmError(f"{url}: {exc}") from None


def request_of(url: str, endpoint: str) -> tuple[str, str | None]:
    """Where to ask for ``url`` (pure): the endpoint's URL with its path and query, and
    the Host to send (the URL's own; None for a bare path)."""
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.netloc or None
    return endpoint.rstrip("/") + target, host


@dataclass
class Report:
    """What warming did so far; the progress line and the summary read it."""

    total: int
    started: float = field(default_factory=time.monotonic)
    counts: Counter[Outcome] = field(default_factory=Counter)
    failures: list[Result] = field(default_factory=list)

    def add(self, result: Result) -> None:
        self.counts[result.outcome] += 1
        if result.outcome is Outcome.FAILED:
            self.failures.append(result)

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def line(self, now: float | None = None) -> str:
        """``warm: 40/100 (40%) 12.5/s ETA 4.8s, 1 failed`` (for a log, not a TTY)."""
        elapsed = (time.monotonic() if now is None else now) - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = self.total - self.done
        eta = f"{left / rate:.1f}s" if rate > 0 else "?"
        percent = 100 * self.done // self.total if self.total else 100
        return (
            f"warm: {self.done}/{self.total} ({percent}%) {rate:.1f}/s ETA {eta}, "
            f"{self.counts[Outcome.FAILED]} failed"
        )

    def summary(self, now: float | None = None) -> str:
        elapsed = (time.monotonic() if now is None else now) - self.started
        lines = [
            f"warm: {self.done} pages in {elapsed:.1f}s: "
            f"{self.counts[Outcome.STORED]} stored (MISS), "
            f"{self.counts[Outcome.CACHED]} already cached (HIT), "
            f"{self.counts[Outcome.FAILED]} failed"
        ]
        reasons = Counter(f.reason for f in self.failures)
        for reason, count in reasons.most_common():
            lines.append(f"  {count} failed: {reason}")
        for failure in self.failures[:MAX_FAILURES_LISTED]:
            lines.append(f"  {failure.url}: {failure.reason}")
        if len(self.failures) > MAX_FAILURES_LISTED:
            lines.append(f"  … and {len(self.failures) - MAX_FAILURES_LISTED} more")
        return "\n".join(lines)


Progress = Callable[[Result], None]


async def warm(
    urls: Sequence[str],
    endpoint: str,
    *,
    concurrency: int,
    timeout_s: float,
    on_result: Progress,
    http: aiohttp.ClientSession,
) -> None:
    """Ask for every URL through ``endpoint``, ``concurrency`` at a time; report each."""
    pending = iter(urls)  # shared by the workers: each takes the next URL (the list is
    # bounded where it was read: MAX_SITEMAP_URLS)

    async def worker() -> None:
        for url in pending:
            on_result(await _warm_one(http, url, endpoint, timeout_s))

    async with asyncio.TaskGroup() as tasks:
        for _ in range(max(1, min(concurrency, len(urls)))):
            tasks.create_task(worker())


async def _warm_one(
    http: aiohttp.ClientSession, url: str, endpoint: str, timeout_s: float
) -> Result:
    target, host = request_of(url, endpoint)
    headers = {"Accept-Encoding": "identity", "User-Agent": "weaver-warm"}
    if host is not None:
        headers["Host"] = host
    try:
        async with asyncio.timeout(timeout_s), http.get(target, headers=headers) as resp:
            async for _ in resp.content.iter_chunked(64 * 1024):
                pass  # read to the end: a fill is stored once its body is whole
            return classify(url, resp.status, resp.headers.get("X-Weaver-Cache"))
    except TimeoutError:
        return Result(url, Outcome.FAILED, f"timeout after {timeout_s:g}s")
    except aiohttp.ClientError as exc:
        return Result(url, Outcome.FAILED, f"connection failed ({type(exc).__name__})")


def progress_printer(
    report: Report, out: TextIO, *, is_tty: bool
) -> tuple[Progress, Callable[[], None]]:
    """(on each result, at the end): a tqdm bar on a terminal; else a plain line at
    most once a second and at the end."""
    if is_tty:
        from tqdm import tqdm

        bar = tqdm(total=report.total, unit="page", file=out, dynamic_ncols=True)

        def on_tty(result: Result) -> None:
            report.add(result)
            bar.update(1)
            bar.set_postfix(failed=report.counts[Outcome.FAILED], refresh=False)

        return on_tty, bar.close
    last = [time.monotonic()]

    def on_line(result: Result) -> None:
        report.add(result)
        now = time.monotonic()
        if now - last[0] >= 1.0:
            last[0] = now
            out.write(report.line(now) + "\n")
            out.flush()

    def end() -> None:
        out.write(report.line() + "\n")
        out.flush()

    return on_line, end


async def warm_command(
    endpoint: str,
    *,
    urls: list[str] | None,
    sitemap: str | None,
    concurrency: int,
    timeout_s: float,
    out: TextIO,
    is_tty: bool,
) -> int:
    """``weaver warm`` for ``urls`` (a file's, :func:`read_url_list`) or the pages of
    ``sitemap``: 0 when every page is cached now, 1 if any failed.

    Raises:
        WarmError: the list of pages could not be read.
    """
    connector = aiohttp.TCPConnector(limit=max(1, concurrency))
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as http:
        if urls is None:
            assert sitemap is not None
            urls = await read_sitemap(http, sitemap, timeout_s)
        report = Report(total=len(urls))
        on_result, end = progress_printer(report, out, is_tty=is_tty)
        try:
            await warm(
                urls,
                endpoint,
                concurrency=concurrency,
                timeout_s=timeout_s,
                on_result=on_result,
                http=http,
            )
        finally:
            end()
    out.write(report.summary() + "\n")
    out.flush()
    return 1 if report.failures else 0
