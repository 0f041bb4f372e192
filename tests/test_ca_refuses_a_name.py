"""Issue 13, fault 1, second half: a new name in DEPLOY_DOMAINS that the CA refuses.

The name resolves to the sandbox, so the challenge pre-check passes and the CA is asked; the real
Pebble refuses the order (its domain blocklist, as a real CA refuses a name its policy forbids).
Nothing visitors get may change: the live vhost, release and certificate stay, and the port-80
challenge server opened for the new name is gone again."""

from __future__ import annotations

import os
from pathlib import Path

from deploy.sandbox import CA_REFUSED_DOMAIN
from deploy.verify import fetch_http, fetch_https

PAGES = ("/", "/hello-https.html")


def served(settings) -> tuple:
    pages = []
    serial = None
    for path in PAGES:
        answer = fetch_https(settings, settings.canonical_domain, path=path)
        pages.append((answer.status, answer.body))
        serial = answer.certificate.serial_number
    return (pages, serial, fetch_http(settings, settings.canonical_domain), os.readlink(settings.current_link),
            Path(settings.vhost_file).read_bytes(), sorted(p.name for p in Path(settings.releases_dir).iterdir()))


def test_a_name_the_ca_refuses_changes_nothing_visitors_get(make_blog, sandbox):
    blog = make_blog("ca-refuses")
    domains = ["ca-refuses.example.com", "www.ca-refuses.example.com"]
    blog.configure(DEPLOY_DOMAINS=domains)
    blog.build()
    blog.fab("deploy")
    settings = blog.settings()
    before = served(settings)
    other = fetch_http(settings, CA_REFUSED_DOMAIN)  # whatever nginx answers for that name today

    (blog.path / "output" / "a-new-post.html").write_text("<p>a new post</p>")
    blog.configure(DEPLOY_DOMAINS=[CA_REFUSED_DOMAIN, *domains])  # first: the canonical name
    result = blog.fab("deploy", check=False)

    assert result.returncode == 1, result.stdout + result.stderr
    message = result.stderr[result.stderr.index("error: "):]
    assert "order https://" not in result.stderr  # refused at the new order: no order was made
    assert CA_REFUSED_DOMAIN in message, message  # what the CA refused
    assert "nothing went live" in message.lower(), message
    assert served(settings) == before  # pages, serial, redirect, current, vhost, releases
    assert fetch_http(settings, CA_REFUSED_DOMAIN) == other  # the challenge server is gone
    state = Path(settings.state_dir)
    assert not Path(f"{settings.vhost_file}.before-order").exists()
    assert not (state / "commit.journal").exists()
