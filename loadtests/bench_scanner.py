"""bench_scanner: scanner throughput on a 1 MB page, plain and with 20 includes.

The baseline, in the same run, is the cheapest pass that still looks at every byte:
``bytes.find(b"<")`` over the same chunks (what any HTML-aware proxy must at least do).
Run: ``python -m loadtests.bench_scanner``.
"""

from __future__ import annotations

import time

from weaver.proxy.scanner import Scanner

CHUNK = 64 * 1024
ROUNDS = 20
ROW = (
    b'<tr><td class="name">Linen shirt</td><td class="price">39</td>'
    b'<td><a href="/p/1">view</a></td></tr>\n'
)


def plain_page(size: int) -> bytes:
    return (b"<!doctype html><html><body><table>\n" + ROW * (size // len(ROW) + 1))[:size]


DENSE_ROW = (
    b'<div class="card-body" data-id="1" aria-label="item"><a href="https://shop.example/p/1">'
    b"view</a></div>\n"
)


def dense_page(size: int) -> bytes:
    """Markup whose marker bytes (``-``, ``:``) are everywhere: the scanner's worst case."""
    return (b"<!doctype html><html><body>\n" + DENSE_ROW * (size // len(DENSE_ROW) + 1))[:size]


def page_with_includes(size: int, count: int) -> bytes:
    part = plain_page(size // count)
    return b"".join(part + f'<esi:include src="/f/{i}"/>'.encode() for i in range(count))


def chunks(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


def scan_rate(data: bytes) -> float:
    pieces = chunks(data)
    started = time.perf_counter()
    for _ in range(ROUNDS):
        scanner = Scanner()
        for piece in pieces:
            scanner.feed(piece)
        scanner.close()
    return len(data) * ROUNDS / (time.perf_counter() - started) / 1e6


def baseline_rate(data: bytes) -> float:
    pieces = chunks(data)
    started = time.perf_counter()
    for _ in range(ROUNDS):
        for piece in pieces:
            pos = piece.find(b"<")
            while pos >= 0:
                pos = piece.find(b"<", pos + 1)
    return len(data) * ROUNDS / (time.perf_counter() - started) / 1e6


def main() -> None:
    plain = plain_page(1024 * 1024)
    woven = page_with_includes(1024 * 1024, 20)
    dense = dense_page(1024 * 1024)
    print(f"1 MB pages in {CHUNK // 1024} KiB chunks, {ROUNDS} rounds")
    for name, page in (("plain HTML", plain), ("20 includes", woven), ("dense - and :", dense)):
        rate, base = scan_rate(page), baseline_rate(page)
        print(
            f"{name:13} scanner {rate:7.0f} MB/s   baseline find('<') {base:7.0f} MB/s   "
            f"ratio {rate / base:.2f}   (target >= 200 MB/s on plain HTML)"
        )


if __name__ == "__main__":
    main()
