"""ACME Renewal Information (RFC 9773): ask the CA when it wants a certificate renewed.

Two unauthenticated GETs (the directory, then renewalInfo/<cert id>) with the standard library
only: a deploy with nothing due does not load the ACME machinery at all. Any failure means
"no ARI answer": the lifetime rule decides and the next run asks again. Retry-After is kept,
clamped to between a minute and a day (RFC 9773 4.3.2), so runs do not ask more often.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import re
import ssl

from cryptography import x509

from .renewal import DEFAULT_ARI_RETRY, RenewalInfo, ari_cert_id

log = logging.getLogger("pelican_https.deploy")

USER_AGENT = "pelican-https"
TIMEOUT = 10  # seconds for the CA's renewal information; without it the deploy decides by dates


def retry_after_time(value: str | None, now: dt.datetime, default: dt.timedelta) -> dt.datetime:
    """Parse an HTTP Retry-After (seconds or an HTTP date) into an aware UTC time; ``default`` if absent or bad."""
    if value:
        value = value.strip()
        if value.isdigit():
            return now + dt.timedelta(seconds=int(value))
        try:
            when = email.utils.parsedate_to_datetime(value)
            return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)
        except (TypeError, ValueError):
            pass
    return now + default


def parse_rfc3339(text: str) -> dt.datetime:
    """'2025-01-02T03:04:05.123456789Z' -> aware datetime (Go servers send nanoseconds; Python takes 6 digits)."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.strip()).replace("z", "Z")
    when = dt.datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def fetch_renewal_info(settings, cert: x509.Certificate, verify, now: dt.datetime) -> RenewalInfo | None:
    """The CA's suggested window for ``cert``, or None (no ARI at this CA, or no usable answer)."""
    context = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
    try:
        directory = json.loads(_get(settings.acme_directory, context)[1])
    except (OSError, ValueError) as exc:  # urllib's errors are OSErrors
        # The CA is down: a deploy that needs no certificate must not fail for it.
        log.warning("cannot read the ACME directory %s (%s); deciding by the 1/3-lifetime rule", settings.acme_directory, exc)
        return None
    base = directory.get("renewalInfo") if isinstance(directory, dict) else None
    if not isinstance(base, str) or not base.startswith("https://"):
        return None
    cert_id = ari_cert_id(cert)
    try:
        headers, body = _get(f"{base.rstrip('/')}/{cert_id}", context)
        raw = json.loads(body)
        start = parse_rfc3339(raw["suggestedWindow"]["start"])
        end = parse_rfc3339(raw["suggestedWindow"]["end"])
        if end < start:
            raise ValueError(f"the window ends before it starts: {body[:200]!r}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        # RFC 9773 4.3.3: on error, fall back and retry later; never block a deploy on ARI.
        log.warning("could not read the CA's renewal info (%s); using the 1/3-lifetime rule", exc)
        return None
    retry_at = retry_after_time(headers.get("Retry-After"), now, DEFAULT_ARI_RETRY)
    retry_at = min(max(retry_at, now + dt.timedelta(minutes=1)), now + dt.timedelta(days=1))
    explanation = raw.get("explanationURL")
    return RenewalInfo(cert_id, start, end, retry_at, explanation if isinstance(explanation, str) else None)


def _get(url: str, context: ssl.SSLContext):
    """(headers, body): the headers object looks names up case-insensitively."""
    import urllib.request  # only when the CA offers ARI: ~20 ms of imports a `fab renew` otherwise skips

    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "application/json"})
    with urllib.request.urlopen(request, context=context, timeout=TIMEOUT) as response:
        return response.headers, response.read(1 << 20).decode("utf-8", "replace")
