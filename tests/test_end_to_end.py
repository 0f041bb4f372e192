"""`fab deploy` of example_site onto the real sandbox, checked over real HTTP(S) like a visitor.

Runs the real CLIs (pelican, fab) in a copy of example_site, against Pebble, sshd and nginx.
"""

from __future__ import annotations

import http.client
import os
import re
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from deploy.verify import fetch_http, fetch_https

OWN_HTTP_LINK = re.compile(r"""(?:href|src|srcset)\s*=\s*["']?[^"'>]*http://(?:www\.)?blog\.example\.com""", re.I)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, sandbox):
    """One blog deployed twice; the second time with a new post."""
    import shutil
    from conftest import EXAMPLE_SITE, Blog

    path = tmp_path_factory.mktemp("e2e") / "blog"
    shutil.copytree(EXAMPLE_SITE, path, ignore=shutil.ignore_patterns("output", "__pycache__"))
    blog = Blog(path, sandbox, "e2e")
    blog.build()
    first = blog.fab("deploy")
    settings = blog.settings()
    first_cert = fetch_https(settings, settings.canonical_domain).certificate
    first_release = os.readlink(settings.current_link)
    return blog, settings, first, first_cert, first_release


def test_https_serves_the_index_with_a_certificate_for_every_domain(deployed, sandbox):
    blog, settings, first, cert, _ = deployed
    assert "is live" in first.stdout
    for domain in settings.domains:
        # fetch_https verifies the chain against Pebble's root and the name against the certificate.
        answer = fetch_https(settings, domain) if domain == settings.canonical_domain else None
        if answer:
            assert answer.status == 200
            assert b"An Example Blog" in answer.body
            assert answer.headers["strict-transport-security"].startswith("max-age=63072000")
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert sorted(names) == sorted(settings.domains)
    # An independent check of the chain with the standard library: verify against the sandbox root only.
    ctx = ssl.create_default_context(cafile=str(sandbox.served_root_ca))
    conn = http.client.HTTPSConnection("127.0.0.1", settings.https_port, context=ctx)
    conn.sock = ctx.wrap_socket(__import__("socket").create_connection(("127.0.0.1", settings.https_port)),
                                server_hostname="www.blog.example.com")
    conn.request("GET", "/", headers={"Host": "www.blog.example.com"})
    resp = conn.getresponse()
    assert resp.status == 301 and resp.getheader("Location") == settings.https_origin + "/"


def test_http_redirects_to_https_keeping_path_and_query(deployed):
    _, settings, *_ = deployed
    status, location = fetch_http(settings, settings.canonical_domain, path="/any/path?q=1")
    assert status == 301
    assert location == f"{settings.https_origin}/any/path?q=1"


def test_acme_challenge_path_is_served_not_redirected(deployed):
    _, settings, *_ = deployed
    token_file = Path(settings.challenge_dir) / "probe-token"
    token_file.write_text("probe-content")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", settings.http_port, timeout=5)
        conn.request("GET", "/.well-known/acme-challenge/probe-token", headers={"Host": settings.canonical_domain})
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"probe-content")
    finally:
        token_file.unlink()


def test_no_own_http_url_left_in_any_served_page(deployed):
    _, settings, *_ = deployed
    release = Path(settings.current_link).resolve()
    pages = sorted(release.rglob("*.html"))
    assert len(pages) >= 5
    for page in pages:
        path = "/" + page.relative_to(release).as_posix()
        answer = fetch_https(settings, settings.canonical_domain, path=path)
        assert answer.status == 200, path
        leftovers = OWN_HTTP_LINK.findall(answer.body.decode())
        assert not leftovers, f"{path} still links over http: {leftovers}"
    # The example post has such links in its source: the rewriter did upgrade them.
    post = fetch_https(settings, settings.canonical_domain, path="/hello-https.html").body.decode()
    assert 'href="https://blog.example.com/pages/about.html"' in post
    assert "curl -I http://blog.example.com/" in post  # the code sample is left as written


def test_second_deploy_keeps_the_certificate_and_serves_a_new_release(deployed):
    blog, settings, _, first_cert, first_release = deployed
    (blog.path / "content" / "posts" / "second.md").write_text(
        "Title: A second post\nDate: 2026-11-20 12:00\n\nFresh content for the second deploy.\n")
    blog.build()
    second = blog.fab("deploy")
    assert "certificate keep" in second.stdout, second.stdout + second.stderr
    assert "nothing to do" in second.stderr
    answer = fetch_https(settings, settings.canonical_domain, path="/a-second-post.html")
    assert answer.status == 200 and b"Fresh content" in answer.body
    assert answer.certificate.serial_number == first_cert.serial_number
    assert os.readlink(settings.current_link) != first_release
