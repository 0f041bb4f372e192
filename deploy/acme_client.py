"""The ACME protocol (RFC 8555) and renewal info (RFC 9773), on top of certbot's ``acme`` library.

What the library lacks is added here, each piece small: badNonce retried more than once,
Retry-After kept on CA errors, a new-order message with ``replaces`` (RFC 9773 section 5),
an account that is looked up before it is registered (so a CA that forgot it gets the same key
again, and a CA requiring external account binding is asked only once), fast polling with
back-off and an overall deadline, and CA problems explained with their likely cause and fix.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

import josepy as jose
from acme import client, errors as acme_errors, messages
from cryptography.hazmat.primitives.asymmetric import ec

from .errors import CertificateError
from .ari import retry_after_time

log = logging.getLogger("pelican_https.deploy")

USER_AGENT = "pelican-https"


# --- the network: badNonce, Retry-After --------------------------------------------------

class PatientNetwork(client.ClientNetwork):
    """ClientNetwork that retries badNonce until it gets through (RFC 8555 section 6.5: a badNonce
    is always retryable with a fresh nonce; the library retries only once) and keeps Retry-After."""

    BAD_NONCE_ATTEMPTS = 20

    def post(self, *args, **kwargs):
        for attempt in range(self.BAD_NONCE_ATTEMPTS):
            try:
                return self._post_once(*args, **kwargs)
            except messages.Error as error:
                if error.code != "badNonce" or attempt == self.BAD_NONCE_ATTEMPTS - 1:
                    raise
                log.debug("badNonce, retrying with a fresh nonce")

    @classmethod
    def _check_response(cls, response, content_type=None):
        try:
            return super()._check_response(response, content_type=content_type)
        except messages.Error as error:
            # The library drops the headers; a rateLimited problem is useless without Retry-After.
            error.retry_after = response.headers.get("Retry-After")  # type: ignore[attr-defined]
            raise


# --- messages the library lacks ----------------------------------------------------------

class NewOrder(messages.NewOrder):
    """RFC 8555 newOrder plus ``replaces`` (RFC 9773 section 5): the ARI id of the certificate this
    order renews. Let's Encrypt exempts such renewals from its rate limits."""
    replaces: str | None = jose.field("replaces", omitempty=True)


# --- the session: directory, account, order ----------------------------------------------

@dataclass
class Session:
    acme: client.ClientV2
    directory_url: str

    @property
    def net(self) -> PatientNetwork:
        return self.acme.net

    def has(self, resource: str) -> bool:
        try:
            self.acme.directory[resource]
            return True
        except KeyError:
            return False


def network(account_key: ec.EllipticCurvePrivateKey | None, verify) -> PatientNetwork:
    key = jose.JWKEC(key=account_key) if account_key is not None else None
    return PatientNetwork(key, alg=jose.ES256, verify_ssl=verify, user_agent=USER_AGENT)


def read_directory(url: str, net: client.ClientNetwork) -> messages.Directory:
    try:
        return client.ClientV2.get_directory(url, net)
    except Exception as exc:  # requests and josepy raise many kinds; all mean "not a reachable ACME CA"
        raise CertificateError(f"cannot read the ACME directory {url}: {exc}. Check DEPLOY_ACME_DIRECTORY and "
                               "that this machine can reach the CA over https") from exc


def open_session(settings, account_key: ec.EllipticCurvePrivateKey, verify) -> Session:
    """Directory, then the account for this key: looked up first, registered only if the CA does not know it."""
    net = network(account_key, verify)
    directory = read_directory(settings.acme_directory, net)
    session = Session(client.ClientV2(directory, net), settings.acme_directory)
    ensure_account(session, settings)
    return session


def ensure_account(session: Session, settings) -> None:
    acme = session.acme
    try:
        # RFC 8555 7.3.1: onlyReturnExisting finds the account for this key without creating one.
        acme.new_account(messages.NewRegistration(only_return_existing=True))
    except acme_errors.ConflictError as exists:  # 200 + Location: the CA knows this key
        session.net.account = messages.RegistrationResource(uri=exists.location, body=messages.Registration())
        return
    except messages.Error as error:
        # Some CAs answer a look-up without binding with externalAccountRequired: register then, too.
        if problem_code(error) not in ("accountDoesNotExist", "externalAccountRequired"):
            raise CertificateError(f"looking up the ACME account failed: {explain(error)}") from error
    else:  # a CA that ignored onlyReturnExisting and created the account: fine, it is ours now
        return
    # The CA does not know the key (first deploy, or the CA forgot it, e.g. Pebble restarted): register
    # the same key again; the key on the server stays the account's identity.
    eab = None
    if settings.acme_eab_kid:
        eab = messages.ExternalAccountBinding.from_data(account_public_key=session.net.key.public_key(),
                                                        kid=settings.acme_eab_kid, hmac_key=settings.acme_eab_hmac_key.value,
                                                        directory=acme.directory)
    registration = messages.NewRegistration.from_data(email=settings.acme_email, terms_of_service_agreed=True,
                                                      external_account_binding=eab)
    try:
        acme.new_account(registration)
    except acme_errors.ConflictError as exists:  # registered concurrently by another run: same key, same account
        session.net.account = messages.RegistrationResource(uri=exists.location, body=messages.Registration())
        return
    except messages.Error as error:
        raise CertificateError(f"registering the ACME account failed: {explain(error)}") from error
    log.info("registered the ACME account key with %s", settings.acme_directory)


def new_order(session: Session, csr_pem: bytes, identifiers: list[str], *, profile: str | None = None,
              replaces: str | None = None) -> messages.OrderResource:
    """POST newOrder (RFC 8555 7.4) with the optional profile and ``replaces``; fetch its authorizations."""
    acme = session.acme
    if profile:
        offered = (acme.directory.meta.profiles if acme.directory.meta else None) or {}
        if profile not in offered:
            raise CertificateError(f"DEPLOY_ACME_PROFILE={profile!r}: the CA at {session.directory_url} offers "
                                   f"{', '.join(sorted(offered)) or 'no profiles'}; choose one of those or None")
    if replaces and not session.has("renewalInfo"):
        replaces = None  # RFC 9773 5: only for CAs that implement ARI
    body = NewOrder(identifiers=[messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=name) for name in identifiers],
                    profile=profile or None, replaces=replaces)
    try:
        response = acme._post(acme.directory["newOrder"], body)
    except messages.Error as error:
        if replaces and problem_code(error) in ("alreadyReplaced", "conflict"):
            # RFC 9773 7.4: that certificate was already replaced (an earlier run failed later on): order anew.
            log.info("the CA says the certificate was already replaced; ordering without 'replaces'")
            return new_order(session, csr_pem, identifiers, profile=profile)
        raise CertificateError(f"the CA refused the new order for {', '.join(identifiers)}: {explain(error)}") from error
    order = messages.Order.from_json(response.json())
    authorizations = [acme._authzr_from_response(acme._post_as_get(url), uri=url) for url in order.authorizations]
    return messages.OrderResource(body=order, uri=response.headers.get("Location"), authorizations=authorizations,
                                  csr_pem=csr_pem)


def poll_authorizations(session: Session, authzs: list[messages.AuthorizationResource], deadline: float) -> None:
    """Poll every pending authorization in one loop until all are valid (RFC 8555 7.5.1)."""
    delay = 0.05  # the library's own polling sleeps a whole second; a CA answers in milliseconds
    pending = list(authzs)
    while time.monotonic() < deadline:
        still = []
        for authz in pending:
            authz, _ = session.acme.poll(authz)
            status = authz.body.status
            if status == messages.STATUS_INVALID:  # RFC 8555 7.1.6: the challenge failed, final
                error = next((c.error for c in authz.body.challenges if c.error), None)
                detail = explain(error) if error else "no detail given"
                raise CertificateError(f"the CA could not validate {authz.body.identifier.value}: {detail}")
            if status != messages.STATUS_VALID:
                still.append(authz)
        pending = still
        if not pending:
            return
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)
    raise CertificateError("timed out waiting for the CA to validate the challenges; try again later")


def finalize(session: Session, order: messages.OrderResource, deadline: float) -> str:
    """POST the CSR to finalize (RFC 8555 7.4), poll the order, download the chain. Returns the PEM chain."""
    acme = session.acme
    try:
        order = acme.begin_finalization(order)
    except messages.Error as error:
        raise CertificateError(f"the CA refused to finalize the order: {explain(error)}") from error
    delay = 0.05
    while time.monotonic() < deadline:
        body = order.body
        if body.status == messages.STATUS_VALID and body.certificate:  # issued
            return acme._post_as_get(body.certificate).text
        if body.status == messages.STATUS_INVALID:  # the order is abandoned
            raise CertificateError(f"the CA refused to issue the certificate: {explain(body.error) if body.error else 'no detail given'}")
        time.sleep(delay)  # "processing"
        delay = min(delay * 1.5, 1.0)
        response = acme._post_as_get(order.uri)
        order = order.update(body=messages.Order.from_json(response.json()))
    raise CertificateError("timed out waiting for the CA to issue the certificate; try again later")


# --- CA problems explained ----------------------------------------------------------------

_CAUSES = {
    "rateLimited": ("the CA's rate limit was reached (Let's Encrypt: e.g. 5 certificates per week for the same "
                    "set of names, 300 new orders per 3 hours)",
                    "wait until the time above; test with DEPLOY_ACME_DIRECTORY='letsencrypt-staging', "
                    "and avoid `fab renew --force` in loops"),
    "unauthorized": ("the CA fetched http://<domain>/.well-known/acme-challenge/<token> and did not get the token: "
                     "the domain points to another server, or that server redirects or answers with something else",
                     "check the domain's A/AAAA records and that nginx on this server serves the challenge folder on port 80"),
    "dns": ("the CA could not resolve the domain (no A/AAAA record, a broken DNSSEC signature, or unreachable name servers)",
            "check the domain's DNS records with a public resolver (e.g. dig @1.1.1.1 <domain> A) and fix them at your DNS provider"),
    "connection": ("the CA could not connect to port 80 of the domain's address (closed, or dropped by a firewall)",
                   "open port 80 to the internet: iptables/nftables rules, ufw allow 80/tcp, "
                   "firewall-cmd --add-service=http --permanent, or your cloud provider's security group"),
    "caa": ("a CAA DNS record for the domain forbids this CA to issue",
            "add a CAA record allowing the CA (e.g. 0 issue \"letsencrypt.org\") or remove the restriction"),
    "rejectedIdentifier": ("the CA will not issue for a name in DEPLOY_DOMAINS (its message above says which): a typo, a name "
                           "that is not under a public suffix (.local, .internal, .test, .example, .lan), an IP address, "
                           "or a name on the CA's block list",
                           "check each name in DEPLOY_DOMAINS: spelled as registered, under a real top-level domain, and "
                           "yours (whois / your DNS provider); remove or correct the one named above and deploy again"),
    "externalAccountRequired": ("this CA requires external account binding",
                                "set DEPLOY_ACME_EAB_KID and DEPLOY_ACME_EAB_HMAC_KEY_ENV with the values from your CA"),
    "unauthorizedAccount": ("the account is not allowed this action", "check the account or EAB credentials"),
    "userActionRequired": ("the CA needs you to accept new terms or act on its website",
                           "open the URL in the CA's message, then run the deploy again"),
    "serverInternal": ("the CA had an internal error", "wait a few minutes and run the deploy again"),
    "badNonce": ("the CA kept rejecting the request's anti-replay nonce", "run the deploy again"),
    "malformed": ("the CA did not understand the request", "report it to pelican-https with the message above"),
    "badCSR": ("the CA refused the certificate request (e.g. a key type it does not accept)",
               "choose another DEPLOY_KEY_TYPE (ec-p256 is accepted everywhere)"),
    "accountDoesNotExist": ("the CA does not know the account key", "run the deploy again: the key will be registered"),
}


def problem_code(error: messages.Error) -> str:
    """The code after urn:ietf:params:acme:error: (the library returns None for codes it does not list)."""
    return str(error.typ or "unknown").rsplit(":", 1)[-1]


def explain(error: messages.Error, now: dt.datetime | None = None) -> str:
    """The CA's problem detail, then the likely cause and the fix (and when to retry, for rate limits).

    A problem about one of the user's own names (rejectedIdentifier, caa, unauthorized, dns, ...,
    also inside a compound problem's subproblems, or a ``malformed`` whose detail names a domain)
    says what to check about that name: it is the user's to fix, not a bug to report.
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    code = problem_code(error)
    text = f"{error.detail or error.title or code} [{code}]"
    subproblems = list(getattr(error, "subproblems", None) or ())
    for sub in subproblems:
        ident = getattr(getattr(sub, "identifier", None), "value", "")
        text += f"; {ident}: {sub.detail}" + (f" [{problem_code(sub)}]" if sub.typ else "")
    if code == "rateLimited":
        retry = getattr(error, "retry_after", None)
        if retry:
            text += f"; the CA allows a retry after {retry_after_time(retry, now, dt.timedelta(0)):%Y-%m-%d %H:%M:%S} UTC"
    cause, fix = _cause(code, error, subproblems)
    if cause:
        text += f". Likely cause: {cause}. Fix: {fix}"
    return text


# A CA's detail that is about a name the user asked for (Boulder: "Cannot issue for ...", "Domain
# name ...", "Invalid identifiers requested", "... is not a valid domain"; Pebble: "policy forbids").
_ABOUT_A_NAME = ("cannot issue for", "domain name", "identifier", "public suffix", "not a valid domain", "policy forbids",
                 "blocked")


def _cause(code: str, error: messages.Error, subproblems: list) -> tuple[str, str]:
    if code == "compound" or (code == "malformed" and subproblems):
        # The order failed for several names: the first subproblem with a known code tells what to check.
        for sub in subproblems:
            if problem_code(sub) in _CAUSES and problem_code(sub) != "malformed":
                return _CAUSES[problem_code(sub)]
        code = "rejectedIdentifier" if subproblems else code
    if code == "malformed" and any(words in (error.detail or "").lower() for words in _ABOUT_A_NAME):
        return _CAUSES["rejectedIdentifier"]
    return _CAUSES.get(code, ("", ""))


def pending_http01(session: Session, order: messages.OrderResource) -> list[tuple]:
    """(authorization, challenge, response, token, key authorization) for each authorization still
    pending (RFC 8555 7.1.4: a valid one is already held by the account)."""
    from acme import challenges

    pending = []
    for authz in order.authorizations:
        if authz.body.status == messages.STATUS_VALID:
            continue
        challb = next((c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)), None)
        if challb is None:
            raise CertificateError(f"the CA offers no HTTP-01 challenge for {authz.body.identifier.value}")
        response, validation = challb.response_and_validation(session.net.key)
        pending.append((authz, challb, response, challb.chall.encode("token"), validation))
    return pending
