"""The exception tree. Every error bundler raises on purpose is a :class:`BundlerError`.

The families say whose fault a failure is, because that decides what a caller may do next::

    BundlerError
    ├── UsageError              the caller asked for something malformed or impossible
    │   ├── ReferenceFormatError  an image reference or transport string does not parse
    │   └── ConfigError           a bundle config is invalid, or names a value path that is absent
    ├── ChartError              a chart is malformed: Chart.yaml, values.yaml, or its templates
    ├── IncompleteError         the rendered chart runs an image the bundle does not hold
    ├── KeyFileError            a key file is malformed, of an unsupported kind, or the
    │                           passphrase does not open it
    ├── RollbackError           promoting would replace a newer version, or change a promoted one
    ├── NotFoundError           the named thing does not exist where it was looked for
    ├── AuthError               credentials are missing or were refused
    ├── TransportError          the network or the disk failed; retrying may help
    │   └── RegistryError       the registry answered with an error status
    └── IntegrityError          content is bad: never retry it, never trust it
        ├── DigestMismatchError   bytes do not hash to the digest that names them
        ├── SizeMismatchError     bytes are not as long as the descriptor says
        ├── ManifestError         a manifest or index is malformed or too large
        ├── UnsafeArchiveError    an archive member escapes, links, or is not a plain file
        └── VerificationError     a bundle failed verification (signature, policy, content);
                                  carries the number of the step that failed

The CLI maps each family to its own exit code (see ``bundler.cli.main``).
"""

from __future__ import annotations


class BundlerError(Exception):
    """Base of every error bundler raises deliberately."""


class UsageError(BundlerError):
    """The request itself is malformed (bad option, impossible combination)."""


class ReferenceFormatError(UsageError):
    """A reference, digest or transport string does not follow its grammar."""


class ConfigError(UsageError):
    """A bundle config file is invalid, or names a chart value path that does not exist."""


class ChartError(BundlerError):
    """A chart is malformed (Chart.yaml, values.yaml) or its templates do not render."""


class IncompleteError(BundlerError):
    """The chart's rendered templates reference images the bundle does not contain."""


class RelocationError(BundlerError):
    """Promotion cannot make the chart run only internal, digest-pinned images it holds."""


class KeyFileError(BundlerError):
    """A key file is malformed or unsupported, or the passphrase does not decrypt it."""


class RollbackError(BundlerError):
    """A promotion would go back to an older version, or change what a version already is."""


class NotFoundError(BundlerError):
    """A manifest, blob, tag, file or layout entry does not exist."""


class AuthError(BundlerError):
    """Credentials are missing, or the registry or token service refused them."""


class TransportError(BundlerError):
    """Network or filesystem failure. The content may be fine; a retry may help."""


class RegistryError(TransportError):
    """A registry answered with an unexpected status."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class IntegrityError(BundlerError):
    """Content failed a check. It must not be retried into acceptance or trusted."""


class DigestMismatchError(IntegrityError):
    """Bytes do not hash to the digest that names them."""


class SizeMismatchError(IntegrityError):
    """Bytes are not as long as their descriptor says."""


class ManifestError(IntegrityError):
    """A manifest or index does not parse, breaks the spec, or exceeds a size bound."""


class UnsafeArchiveError(IntegrityError):
    """An archive member is a link, a device, or a path outside the archive's root."""


class VerificationError(IntegrityError):
    """A bundle failed verification. ``step`` is the number in docs/verification.md."""

    def __init__(self, step: int, message: str) -> None:
        super().__init__(f"verification step {step} failed: {message}")
        self.step = step
