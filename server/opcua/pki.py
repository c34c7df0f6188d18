"""The OPC UA server's certificate and the trust list of client certificates.

Under the data directory's `pki/` (OPC 10000-12 § F.1 layout, as UA-.NET and node-opcua
keep it): `own/` the server's application-instance certificate and key, generated on first
run and reused after; `trusted/` the client certificates allowed in; `rejected/` every
unknown client certificate that tried, refused until an engineer moves it to `trusted/`
(or runs `carbonscada opcua trust`); `issuers/` CA certificates. Files are named
`<common name> [<SHA-1 thumbprint>].der`, the thumbprint OPC UA uses for a certificate.
The trust list is read again at each new session, so a certificate moved by hand counts
at once.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import logging
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto import cert_gen
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.ua.status_codes import StatusCodes, get_name_and_doc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from model.errors import ConfigError, InvalidValueError

log = logging.getLogger(__name__)

CERT_DAYS = 5 * 365  # the server certificate's validity; renewed when it nears its end
RENEW_BEFORE = datetime.timedelta(days=30)
_SAFE = re.compile(r"[^A-Za-z0-9 ._-]+")


def status_name(code: int) -> str:
    """The StatusCode's name, e.g. BadCertificateUntrusted."""
    return str(get_name_and_doc(code)[0])


def thumbprint(cert: x509.Certificate) -> str:
    """The certificate's OPC UA thumbprint: SHA-1 of its DER, upper-case hex."""
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()


def common_name(cert: x509.Certificate) -> str:
    """The subject's CN, or "" without one."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def file_name(cert: x509.Certificate) -> str:
    """`<common name> [<thumbprint>].der`: readable, and unique per certificate."""
    cn = _SAFE.sub("_", common_name(cert)).strip() or "certificate"
    return f"{cn[:64]} [{thumbprint(cert)}].der"


def read_certificate(path: Path) -> x509.Certificate:
    """A DER or PEM certificate file; InvalidValueError naming the file if it is neither."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidValueError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise InvalidValueError(f"{path}: not a DER or PEM X.509 certificate") from None


@dataclass(frozen=True, slots=True)
class OwnCertificate:
    """The server's certificate and private key files."""

    cert: Path
    key: Path


class Pki:
    """The PKI folder: the server's own certificate and the client trust list."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.own = root / "own"
        self.trusted = root / "trusted"
        self.rejected = root / "rejected"
        self.issuers = root / "issuers"

    def create(self) -> None:
        """Create the folders (the key's folder readable by the service only)."""
        try:
            for d in (self.own, self.trusted, self.rejected, self.issuers):
                d.mkdir(parents=True, exist_ok=True)
            self.own.chmod(0o700)
        except OSError as exc:
            raise ConfigError(str(self.root), "opcua.pki", f"cannot create the PKI folder: "
                              f"{exc.strerror}") from None

    def own_certificate(self, application_uri: str, name: str,
                        hostnames: list[str]) -> OwnCertificate:
        """The server certificate for `application_uri`, generated on first run and reused.

        A new one is made only when there is none, when its ApplicationUri (the
        subjectAltName URI) differs, or when it expires within RENEW_BEFORE.
        """
        self.create()
        paths = OwnCertificate(self.own / "server_cert.der", self.own / "server_key.pem")
        if paths.cert.exists() and paths.key.exists():
            cert = read_certificate(paths.cert)
            uris = cert.extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value.get_values_for_type(
                x509.UniformResourceIdentifier)
            fresh = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > RENEW_BEFORE
            if application_uri in uris and fresh:
                return paths
            log.warning("OPC UA server certificate %s is for %s or expires %s: making a new one",
                        paths.cert, ", ".join(uris) or "no URI",
                        cert.not_valid_after_utc.isoformat())
        key = cert_gen.generate_private_key()  # RSA 2048
        alt: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)]
        for host in hostnames:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                alt.append(x509.DNSName(host))
        cert = cert_gen.generate_self_signed_app_certificate(
            key, name, {"organizationName": "carbonscada"}, alt,
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], days=CERT_DAYS)
        paths.key.write_bytes(cert_gen.dump_private_key_as_pem(key))
        paths.key.chmod(0o600)
        paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.DER))
        log.info("OPC UA server certificate %s generated (thumbprint %s)", paths.cert,
                 thumbprint(cert))
        return paths

    def _listed(self, folder: Path) -> dict[str, Path]:
        """Thumbprint → file of every readable certificate in `folder`."""
        out: dict[str, Path] = {}
        for p in sorted(folder.glob("*")):
            if p.is_file():
                try:
                    out[thumbprint(read_certificate(p))] = p
                except InvalidValueError:
                    log.warning("%s is not a certificate: ignored", p)
        return out

    def trusted_list(self) -> dict[str, Path]:
        """Thumbprint → file of every trusted client certificate."""
        return self._listed(self.trusted)

    def rejected_list(self) -> dict[str, Path]:
        """Thumbprint → file of every refused client certificate."""
        return self._listed(self.rejected)

    def trust(self, cert: x509.Certificate) -> Path:
        """Put a certificate into trusted/ (and out of rejected/); its file there."""
        self.create()
        tp = thumbprint(cert)
        old = self.rejected_list().get(tp)
        if old is not None:
            old.unlink()
        target = self.trusted / file_name(cert)
        target.write_bytes(cert.public_bytes(serialization.Encoding.DER))
        return target

    def reject(self, tp: str) -> Path:
        """Move the trusted certificate with thumbprint `tp` to rejected/; its file there."""
        found = self.trusted_list().get(tp.upper().replace(":", ""))
        if found is None:
            raise InvalidValueError(f"no trusted certificate with thumbprint {tp!r} in "
                                    f"{self.trusted}")
        target = self.rejected / found.name
        found.replace(target)
        return target

    def note_rejected(self, cert: x509.Certificate) -> Path:
        """Keep an unknown client's certificate in rejected/ for an engineer to review."""
        target = self.rejected / file_name(cert)
        if not target.exists():
            target.write_bytes(cert.public_bytes(serialization.Encoding.DER))
        return target


class ClientValidator:
    """asyncua's certificate validator for client certificates, with this trust list.

    The certificate's time range, ApplicationUri and key usages are checked as OPC UA
    asks (asyncua's CertificateValidator); then it must be in trusted/, unless
    `trust_all` (the demo plant), which puts it there. An untrusted one is filed in
    rejected/ and the session refused with BadCertificateUntrusted.
    """

    def __init__(self, pki: Pki, trust_all: bool) -> None:
        self.pki = pki
        self.trust_all = trust_all
        self._basic = CertificateValidator(CertificateValidatorOptions.EXT_VALIDATION
                                           | CertificateValidatorOptions.PEER_CLIENT)

    async def __call__(self, cert: x509.Certificate,
                       app_description: ua.ApplicationDescription) -> None:
        """Raise ServiceError with the StatusCode unless the client may connect."""
        try:
            await self._basic.validate(cert, app_description)
        except ServiceError as exc:
            log.warning("OPC UA client %s refused: %s", app_description.ApplicationUri,
                        status_name(exc.code))
            raise
        tp = thumbprint(cert)
        if tp in self.pki.trusted_list():
            return
        if self.trust_all:
            path = self.pki.trust(cert)
            log.warning("OPC UA client certificate of %s trusted at first use (trust_all_clients)"
                        ": %s", app_description.ApplicationUri, path)
            return
        path = self.pki.note_rejected(cert)
        log.warning("OPC UA client %s refused: its certificate is not trusted; to let it in, "
                    "move %s to %s or run 'carbonscada opcua trust'",
                    app_description.ApplicationUri, path, self.pki.trusted)
        raise ServiceError(StatusCodes.BadCertificateUntrusted)


def host_names(endpoint_host: str) -> list[str]:
    """Names and addresses a client may reach the server by, for the certificate's SAN."""
    names = {"localhost", "127.0.0.1", socket.gethostname()}
    if endpoint_host not in ("", "0.0.0.0", "::"):
        names.add(endpoint_host)
    return sorted(names)
