"""Generate a Pelican-shaped output folder of ~2,000 articles, without running Pelican.

``generate_big`` makes the big site of the upload benchmark: the same pages (a few thousand),
plus photos of random bytes (already compressed, like real JPEGs) up to a total size.

Running Pelican on 2,000 posts takes minutes and is not what is measured: the upload only
sees files. So the files are written directly, shaped like Pelican's default theme output:
one HTML page per article (4-15 KB, median 8 KB: theme boilerplate plus varied text, so it compresses
like real pages, not like repeated bytes), paginated index pages, category/tag/author pages,
Atom feeds, theme CSS, and binary assets of random bytes (incompressible, like real JPEG/PNG).
Deterministic for a given seed.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

WORDS = ("static site blog pelican nginx release deploy https certificate renewal server upload manifest "
         "python article theme feed archive category tag author page image photo journey garden coffee "
         "weekend reading notes travel mountain river city night morning light code test build ship").split()

HEAD = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8" />
  <meta name="generator" content="Pelican" />
  <title>{title} - A Generated Blog</title>
  <link rel="stylesheet" href="/theme/css/main.css" />
  <link href="https://blog.example.com/feeds/all.atom.xml" type="application/atom+xml" rel="alternate" title="A Generated Blog Atom Feed" />
</head>
<body id="index" class="home">
  <header id="banner" class="body"><h1><a href="https://blog.example.com/">A Generated Blog</a></h1></header>
  <nav id="menu"><ul>{menu}</ul></nav>
"""
FOOT = """  <section id="extras" class="body"><div class="blogroll"><h2>links</h2><ul>
    <li><a href="https://getpelican.com/">Pelican</a></li><li><a href="https://www.python.org/">Python.org</a></li>
    <li><a href="https://palletsprojects.com/p/jinja/">Jinja2</a></li></ul></div></section>
  <footer id="contentinfo" class="body"><address id="about" class="vcard body">
    Proudly powered by <a rel="nofollow" href="https://getpelican.com/">Pelican</a>, which takes great advantage of
    <a rel="nofollow" href="https://www.python.org/">Python</a>.</address></footer>
</body>
</html>
"""


def sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(8, 20))]
    return " ".join(words).capitalize() + "."


def paragraph(rng: random.Random) -> str:
    return "<p>" + " ".join(sentence(rng) for _ in range(rng.randint(3, 8))) + "</p>\n"


def generate(out: Path, articles: int = 2000, seed: int = 4) -> Path:
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    categories = [f"category-{i}" for i in range(12)]
    tags = [f"tag-{i}" for i in range(120)]
    menu = "".join(f'<li><a href="/category/{c}.html">{c}</a></li>' for c in categories)
    slugs = []
    for n in range(articles):
        slug = f"post-{n:04d}-{rng.choice(WORDS)}-{rng.choice(WORDS)}"
        slugs.append(slug)
        body = "".join(paragraph(rng) for _ in range(rng.randint(6, 18)))
        img = f'<p><img src="/images/photo-{n % 400:03d}.jpg" alt="photo" /></p>\n' if n % 3 == 0 else ""
        page = (HEAD.format(title=slug, menu=menu) + f'<section id="content" class="body"><article><h2>{slug}</h2>\n'
                + img + body + "</article></section>\n" + FOOT)
        (out / f"{slug}.html").write_text(page)
    # Paginated indexes, categories, tags, author, archives: lists of summaries.
    def listing(path: Path, title: str, items: list[str]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        summaries = "".join(f'<article><h2><a href="/{s}.html">{s}</a></h2>{paragraph(rng)}</article>\n' for s in items)
        path.write_text(HEAD.format(title=title, menu=menu) + summaries + FOOT)
    for page in range(articles // 10):
        listing(out / ("index.html" if page == 0 else f"index{page + 1}.html"), "Home", slugs[page * 10:page * 10 + 10])
    for c in categories:
        listing(out / "category" / f"{c}.html", c, rng.sample(slugs, 10))
    for t in tags:
        listing(out / "tag" / f"{t}.html", t, rng.sample(slugs, 10))
    listing(out / "author" / "someone.html", "someone", slugs[:10])
    (out / "archives.html").write_text(HEAD.format(title="Archives", menu=menu)
                                       + "".join(f'<dd><a href="/{s}.html">{s}</a></dd>\n' for s in slugs) + FOOT)
    feeds = out / "feeds"
    feeds.mkdir(exist_ok=True)
    entries = "".join(f"<entry><title>{s}</title><link href='https://blog.example.com/{s}.html'/><summary>{sentence(rng)}</summary></entry>\n" for s in slugs[:200])
    (feeds / "all.atom.xml").write_text(f'<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">{entries}</feed>\n')
    for c in categories:
        (feeds / f"{c}.atom.xml").write_text(f'<?xml version="1.0" encoding="utf-8"?>\n<feed>{entries[:20000]}</feed>\n')
    css = out / "theme" / "css"
    css.mkdir(parents=True, exist_ok=True)
    (css / "main.css").write_text("".join(f".c{i} {{ margin: {i}px; color: #{i * 7919 % 0xffffff:06x}; }}\n" for i in range(1500)))
    # Binary assets: random bytes are incompressible, like real JPEG/PNG data.
    images = out / "images"
    images.mkdir(exist_ok=True)
    for n in range(400):
        (images / f"photo-{n:03d}.jpg").write_bytes(rng.randbytes(rng.randint(20_000, 120_000)))
    for n in range(100):
        (images / f"icon-{n:03d}.png").write_bytes(rng.randbytes(rng.randint(1_000, 20_000)))
    return out


def generate_big(out: Path, megabytes: int, articles: int = 3000, seed: int = 5) -> Path:
    """A site of at least ``megabytes`` MB, most of it already-compressed images: ``generate``'s
    pages and assets, plus photos of 0.2-2 MB of random bytes in ``photos/<year>/``."""
    generate(out, articles, seed)
    rng = random.Random(seed)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    n = 0
    while total < megabytes * 1_000_000:
        folder = out / "photos" / str(2010 + n % 15)
        folder.mkdir(parents=True, exist_ok=True)
        size = rng.randint(200_000, 2_000_000)
        (folder / f"img-{n:05d}.jpg").write_bytes(rng.randbytes(size))
        total += size
        n += 1
    return out


if __name__ == "__main__":
    generate(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 2000)
