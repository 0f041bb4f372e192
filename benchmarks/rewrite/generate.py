"""Generate the benchmark site: N articles in Markdown, Pelican's default theme.

Each article mixes what the rewriter meets on a real blog: own-domain http
links (SITEURL's host and its www twin), own http images, external http
assets (one https-capable CDN listed in HTTPS_UPGRADE_HOSTS, one third party
that stays http), a srcset, an inline style with url(), a code sample that
shows http:// on purpose, and Japanese prose.

    python3 benchmarks/rewrite/generate.py DIR [--articles 2000]
"""

from __future__ import annotations

import argparse
import os
import random
import textwrap

HOST = "bench.example.com"

SETTINGS = f'''\
AUTHOR = "Bench"
SITENAME = "Rewrite benchmark"
SITEURL = "https://{HOST}"
PATH = "content"
TIMEZONE = "UTC"
DEFAULT_LANG = "en"
STATIC_PATHS = ["images", "css"]
DEFAULT_PAGINATION = 10
CACHE_CONTENT = False
LOAD_CONTENT_CACHE = False
HTTPS_HOSTS = ["www.{HOST}"]
HTTPS_UPGRADE_HOSTS = ["cdn.example.org"]
'''

JAPANESE = [
    "吾輩は猫である。名前はまだ無い。",
    "どこで生れたかとんと見当がつかぬ。",
    "何でも薄暗いじめじめした所でニャーニャー泣いていた事だけは記憶している。",
    "静的サイトジェネレーターで HTTPS に移行する。",
    "東京の天気は晴れ、気温は二十度です。",
]
WORDS = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod "
         "tempor incididunt ut labore et dolore magna aliqua").split()


def _prose(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def article(i: int, rng: random.Random, total: int) -> str:
    other = rng.randrange(total)
    return textwrap.dedent(f"""\
        Title: Article {i}: 記事 {i}
        Date: 2020-01-01 00:00
        Modified: 2021-01-01 {i % 24:02d}:{i % 60:02d}
        Category: cat{i % 12}x
        Tags: tag{i % 40}x, tag{40 + (i * 7) % 40}x, 日本語
        Slug: article-{i}

        {rng.choice(JAPANESE)} {_prose(rng, 40)} See [the previous article](http://{HOST}/article-{other}.html)
        and [the www one](http://www.{HOST}/article-{(other + 1) % total}.html).

        ![own image](http://{HOST}/images/photo{i % 50}.png)

        {rng.choice(JAPANESE)}{rng.choice(JAPANESE)} {_prose(rng, 60)}

        <img src="http://cdn.example.org/assets/img{i % 30}.jpg" alt="cdn asset">
        <img src="http://thirdparty.example.net/badge{i % 5}.svg" alt="third-party badge">
        <img srcset="http://{HOST}/images/photo{i % 50}.png 1x, http://{HOST}/images/photo{i % 50}@2x.png 2x" src="http://{HOST}/images/photo{i % 50}.png" alt="srcset">
        <div style="background: url('http://{HOST}/images/bg{i % 7}.png') no-repeat">{rng.choice(JAPANESE)}</div>

        {_prose(rng, 80)} An [external http link](http://www.example.net/page/{i}) and
        an [https one](https://www.python.org/).

            :::html
            <a href="http://example.com/">code sample, left alone</a>

        {rng.choice(JAPANESE)} {_prose(rng, 120)}
        """)


def generate(directory: str, articles: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    content = os.path.join(directory, "content")
    os.makedirs(os.path.join(content, "images"), exist_ok=True)
    os.makedirs(os.path.join(content, "css"), exist_ok=True)
    os.makedirs(os.path.join(content, "pages"), exist_ok=True)
    with open(os.path.join(directory, "pelicanconf.py"), "w", encoding="utf-8") as f:
        f.write(SETTINGS)
    for i in range(articles):
        with open(os.path.join(content, f"article-{i}.md"), "w", encoding="utf-8") as f:
            f.write(article(i, rng, articles))
    with open(os.path.join(content, "pages", "about.md"), "w", encoding="utf-8") as f:
        f.write(f"Title: About\n\nMe at [my site](http://{HOST}/) and "
                f"![me](http://{HOST}/images/me.png)\n")
    with open(os.path.join(content, "css", "extra.css"), "w", encoding="utf-8") as f:
        f.write(f"body {{ background: url(http://{HOST}/images/bg.png); }}\n" * 20)
    for i in range(50):
        with open(os.path.join(content, "images", f"photo{i}.png"), "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n" + bytes(200))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory")
    parser.add_argument("--articles", type=int, default=2000)
    args = parser.parse_args()
    generate(args.directory, args.articles)
