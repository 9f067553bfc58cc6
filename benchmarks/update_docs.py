"""Put the committed bench results into docs/benchmarks.md: each results file's markdown, made from its JSON.

    PYTHONPATH=src .venv/bin/python benchmarks/update_docs.py

For every ``<!-- NAME:start -->`` ... ``<!-- NAME:end -->`` block of the page whose NAME is in
:data:`BLOCKS`, the block becomes ``stnkit.bench.to_markdown`` of the JSON report, which is also written
beside it as ``.md`` (what ``stnkit bench --out`` writes). Nothing is typed by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

from stnkit.bench import to_markdown

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "benchmarks.md"
RESULTS = ROOT / "benchmarks" / "results"
BLOCKS = {
    "bench": "bench.json",
    "bench-volumes-64": "bench_volumes_64.json",
    "bench-volumes-128": "bench_volumes_128.json",
    "bench-volumes-128-b4": "bench_volumes_128_b4.json",
}


def main() -> None:
    page = PAGE.read_text()
    for name, file in BLOCKS.items():
        start, end = f"<!-- {name}:start -->\n", f"<!-- {name}:end -->"
        if start not in page or not (RESULTS / file).exists():
            continue
        md = to_markdown(json.loads((RESULTS / file).read_text()))
        (RESULTS / file).with_suffix(".md").write_text(md)
        head, rest = page.split(start, 1)
        page = head + start + md + end + rest.split(end, 1)[1]
        print(f"{PAGE.relative_to(ROOT)}: {name} from {file}")
    PAGE.write_text(page)


if __name__ == "__main__":
    main()
