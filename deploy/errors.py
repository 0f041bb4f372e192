"""The project's exceptions: one small hierarchy, caught only at the task edge.

Every message says what was being done, what failed and what to do next.
Causes are chained with ``raise ... from`` so the original error stays visible.
"""


class DeployError(Exception):
    """Base class: the task prints the message and exits non-zero."""


class SettingsError(DeployError):
    """A setting is missing or has a value we cannot use."""


class ConnectionFailed(DeployError):
    """SSH could not connect or the host key did not match."""


class RemoteCommandFailed(DeployError):
    """A command on the server exited non-zero (``status``: its exit status)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class UploadError(DeployError):
    """The release could not be built or uploaded."""


class LockError(DeployError):
    """Another deploy holds the server's deploy lock, or the lock could not be taken."""


class CertificateError(DeployError):
    """The certificate could not be obtained or installed."""


class NginxError(DeployError):
    """The vhost failed `nginx -t` or nginx could not be reloaded."""


class VerificationFailed(DeployError):
    """The site does not answer the way it should after the deploy."""


class SandboxError(DeployError):
    """The local sandbox could not start, or a rehearsal names none (a test must fail loudly on this)."""


class ChallengeCheckFailed(CertificateError):
    """The challenge URL does not serve the token as the CA would fetch it; the CA was not asked."""
