"""Generate a blog shaped like the real ones that predate HTTPS: a WordPress
import, in Markdown and reST, about 1,000 output pages.

- 560 articles (two in three Markdown as pelican-import writes it: raw HTML
  with [caption] shortcodes, <!--more-->, wp-content images; the rest reST),
  12 pages, 3 authors, 15 categories, 90 tags, WordPress-style URLs;
- feeds by category, tag and author, the RSS ones without an extension
  (``feed``, ``tag/<slug>/feed``), as WordPress names them;
- about 300 external http images (Flickr, Wikimedia with ``&amp;`` in their
  names, a badge service) and 150 own-host http links and 150 own-host http
  images on the old host names, which are listed in HTTPS_HOSTS;
- code samples that show http:// on purpose, Wikipedia links with
  parentheses, links to a sibling host of the blog (resume.example.com).

    python3 benchmarks/realblog/generate.py DIR
"""

from __future__ import annotations

import argparse
import os
import random

HOST = "blog.example.com"
OLD_HOSTS = ("www.blog.example.com", "example.wordpress.com")
ARTICLES, PAGES, AUTHORS, CATEGORIES, TAGS = 560, 12, 3, 15, 90

SETTINGS = f'''\
AUTHOR = "Author 0"
SITENAME = "A blog since 2006"
SITEURL = "https://{HOST}"
PATH = "content"
TIMEZONE = "UTC"
DEFAULT_LANG = "en"
ARTICLE_PATHS = ["posts"]
PAGE_PATHS = ["pages"]
STATIC_PATHS = ["images"]
DEFAULT_PAGINATION = 10
CACHE_CONTENT = False
LOAD_CONTENT_CACHE = False
ARTICLE_URL = "{{date:%Y}}/{{date:%m}}/{{slug}}/"
ARTICLE_SAVE_AS = "{{date:%Y}}/{{date:%m}}/{{slug}}/index.html"
PAGE_URL = "{{slug}}/"
PAGE_SAVE_AS = "{{slug}}/index.html"
CATEGORY_URL = "category/{{slug}}/"
CATEGORY_SAVE_AS = "category/{{slug}}/index.html"
TAG_URL = "tag/{{slug}}/"
TAG_SAVE_AS = "tag/{{slug}}/index.html"
AUTHOR_URL = "author/{{slug}}/"
AUTHOR_SAVE_AS = "author/{{slug}}/index.html"
YEAR_ARCHIVE_SAVE_AS = "{{date:%Y}}/index.html"
FEED_ALL_ATOM = "feeds/all.atom.xml"
FEED_RSS = "feed"
CATEGORY_FEED_ATOM = "feeds/{{slug}}.atom.xml"
CATEGORY_FEED_RSS = "category/{{slug}}/feed"
TAG_FEED_RSS = "tag/{{slug}}/feed"
AUTHOR_FEED_ATOM = None
AUTHOR_FEED_RSS = "author/{{slug}}/feed"
TRANSLATION_FEED_ATOM = None
HTTPS_HOSTS = {list(OLD_HOSTS)!r}
HTTPS_UPGRADE_HOSTS = ["upload.wikimedia.org"]
'''

WORDS = ("the a of to and in that it was for on with as I at this but his by from they we "
         "she or an my one all would there their what so up out if about who get which go me "
         "when make can like time no just him know take people into year your good some could "
         "them see other than then now look only come its over think also back after use two "
         "how our work first well way even new want because any these give day most us camera "
         "photo trip morning coffee garden winter summer code server travel book").split()
EXTERNAL_IMAGES = [f"http://farm{i % 9 + 1}.static.flickr.com/{3000 + i}/{i}_a1b2c3_m.jpg" for i in range(120)] + [
    f"http://upload.wikimedia.org/wikipedia/commons/{i % 10}/{i % 7}a/Plant_{i}&amp;Pot.JPG" for i in range(60)] + [
    f"http://badges.example.net/b/{i}.png" for i in range(20)]
WIKI = ["The_Shining_(film)", "Python_(programming_language)", "Mercury_(planet)", "Berlin", "Tea"]


def prose(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def own_url(rng: random.Random, path: str) -> str:
    return f"http://{rng.choice(OLD_HOSTS + (HOST,))}/{path}"


def wordpress_markdown(body: list[str]) -> str:
    """What pelican-import makes of a WordPress post: raw HTML paragraphs."""
    return "\n\n".join([f"<p>{body[0]}</p>", "<!--more-->"] + [f"<p>{p}</p>" for p in body[1:]])


def markdown_article(i: int, rng: random.Random, links: dict) -> str:
    body = [prose(rng, rng.randint(60, 120)) for _ in range(rng.randint(4, 8))]
    if links["own"]:
        body[1] += f' See <a href="{own_url(rng, links["own"])}">an older post</a>.'
    if links["image"]:
        image = links["image"]
        body.insert(2, f'[caption id="attachment_{i}" align="aligncenter" width="500"]'
                       f'<a href="{image}"><img class="size-full wp-image-{i}" title="IMG_{i}" '
                       f'src="{image}" alt="" width="500" height="375" /></a> A photo[/caption]')
    if links["own_image"]:
        body.insert(1, f'<img class="alignleft" src="{links["own_image"]}" alt="" width="150" />')
    body[-1] += f' (<a href="http://en.wikipedia.org/wiki/{rng.choice(WIKI)}">Wikipedia</a>, ' \
                f'<a href="http://resume.example.com/">my CV</a>)'
    if i % 9 == 0:
        body.append('<pre><code>&lt;a href="http://example.com/"&gt;link&lt;/a&gt;\n'
                    'curl http://localhost:8000/</code></pre>')
    return (f"Title: Post {i}: {prose(rng, 4)[:-1]}\nDate: {2006 + i % 12}-{i % 12 + 1:02d}-{i % 28 + 1:02d} 10:00\n"
            f"Category: {_category(i)}\nTags: {_tags(i)}\nAuthor: Author {i % AUTHORS}\n"
            f"Slug: post-{i}\n\n{wordpress_markdown(body)}\n")


def rest_article(i: int, rng: random.Random, links: dict) -> str:
    title = f"Post {i}: {prose(rng, 4)[:-1]}"
    parts = [prose(rng, rng.randint(60, 120)) for _ in range(rng.randint(4, 8))]
    if links["own"]:
        parts[1] += f" See `an older post <{own_url(rng, links['own'])}>`_."
    if links["image"]:
        parts.insert(2, f".. image:: {links['image'].replace('&amp;', '&')}\n   :alt: a photo")
    if links["own_image"]:
        parts.insert(1, f".. image:: {links['own_image']}\n   :width: 150")
    parts[-1] += f" (`Wikipedia <http://en.wikipedia.org/wiki/{rng.choice(WIKI)}>`_)"
    if i % 9 == 0:
        parts.append(".. code-block:: html\n\n   <a href=\"http://example.com/\">link</a>")
    return (f"{title}\n{'#' * len(title)}\n\n:date: {2006 + i % 12}-{i % 12 + 1:02d}-{i % 28 + 1:02d} 10:00\n"
            f":category: {_category(i)}\n:tags: {_tags(i)}\n:author: Author {i % AUTHORS}\n"
            f":slug: post-{i}\n\n" + "\n\n".join(parts) + "\n")


def _category(i: int) -> str:
    return f"Category {i % CATEGORIES}"


def _tags(i: int) -> str:
    return ", ".join(f"tag{(i * k) % TAGS}" for k in (1, 7, 13))


def generate(directory: str, seed: int = 1) -> None:
    rng = random.Random(seed)
    posts, pages = os.path.join(directory, "content", "posts"), os.path.join(directory, "content", "pages")
    for folder in (posts, pages, os.path.join(directory, "content", "images")):
        os.makedirs(folder, exist_ok=True)
    with open(os.path.join(directory, "pelicanconf.py"), "w", encoding="utf-8") as f:
        f.write(SETTINGS)
    for i in range(ARTICLES):
        links = {
            # about 150 own links, 300 external images, 150 own images
            "own": f"{2006 + rng.randrange(12)}/{rng.randrange(12) + 1:02d}/post-{rng.randrange(ARTICLES)}/"
            if rng.random() < 0.27 else None,
            "image": EXTERNAL_IMAGES[rng.randrange(len(EXTERNAL_IMAGES))] if rng.random() < 0.54 else None,
            "own_image": own_url(rng, f"wp-content/uploads/{2006 + i % 12}/05/IMG_{i}.jpg")
            if rng.random() < 0.27 else None,
        }
        markdown = i % 3 != 2
        text = markdown_article(i, rng, links) if markdown else rest_article(i, rng, links)
        with open(os.path.join(posts, f"post-{i}.{'md' if markdown else 'rst'}"), "w", encoding="utf-8") as f:
            f.write(text)
    for i in range(PAGES):
        with open(os.path.join(pages, f"page-{i}.md"), "w", encoding="utf-8") as f:
            f.write(f"Title: Page {i}\n\n<p>{prose(rng, 150)} "
                    f'<a href="{own_url(rng, "about/")}">About</a></p>\n')


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory")
    generate(parser.parse_args().directory)
