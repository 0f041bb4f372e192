"""explain(): a CA refusing the user's own domain says what to check, never "report it" (pure)."""

from __future__ import annotations

import pytest
from acme import messages

from deploy import acme_client


@pytest.mark.parametrize("code, detail", [
    ("rejectedIdentifier", 'Error creating new order :: Cannot issue for "blog.example": Domain name does not end with a valid public suffix (TLD)'),
    ("malformed", 'Error creating new order :: Cannot issue for "blog..example.com": Domain name contains an empty label'),
    ("malformed", "Invalid identifiers requested :: Cannot issue for \"203.0.113.5\": The ACME server can not issue a certificate for an IP address"),
    ("rejectedIdentifier", "Order includes a blocked identifier: policy forbids issuing for name"),
])
def test_a_rejected_own_domain_says_what_to_check(code, detail):
    text = acme_client.explain(messages.Error.with_code(code, detail=detail))
    assert text.startswith(detail)
    assert "report it" not in text and "pelican-https" not in text
    fix = text.split("Fix:")[1]
    assert "DEPLOY_DOMAINS" in fix and "spelled" in fix


def test_subproblems_name_each_domain_and_lead_to_the_first_known_cause():
    error = messages.Error.from_json({
        "type": "urn:ietf:params:acme:error:compound", "detail": "Cannot issue for 2 identifiers",
        "subproblems": [
            {"type": "urn:ietf:params:acme:error:caa", "detail": "CAA record forbids issuance",
             "identifier": {"type": "dns", "value": "blog.example.com"}},
            {"type": "urn:ietf:params:acme:error:rejectedIdentifier", "detail": "blocked",
             "identifier": {"type": "dns", "value": "www.blog.example.com"}},
        ]})
    text = acme_client.explain(error)
    assert "blog.example.com: CAA record forbids issuance [caa]" in text
    assert "www.blog.example.com: blocked [rejectedIdentifier]" in text
    assert "0 issue" in text.split("Fix:")[1] and "report it" not in text


def test_a_malformed_request_of_ours_still_asks_for_a_report():
    text = acme_client.explain(messages.Error.with_code("malformed", detail="JWS has no anti-replay nonce"))
    assert "report it to pelican-https" in text
