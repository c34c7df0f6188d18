"""The OPC UA server certificate (made once, reused) and the client trust list."""

from __future__ import annotations

from pathlib import Path

import pytest
from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto import cert_gen
from asyncua.ua.status_codes import StatusCodes
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from server.opcua.pki import ClientValidator, Pki, read_certificate, thumbprint

URI = "urn:carbonscada:testsite"


def client_cert(uri: str = "urn:example:client") -> x509.Certificate:
    key = cert_gen.generate_private_key()
    return cert_gen.generate_self_signed_app_certificate(
        key, "DCS client", {}, [x509.UniformResourceIdentifier(uri)],
        [ExtendedKeyUsageOID.CLIENT_AUTH], days=30)


def description(uri: str = "urn:example:client") -> ua.ApplicationDescription:
    d = ua.ApplicationDescription()
    d.ApplicationUri = uri
    d.ApplicationType = ua.ApplicationType.Client
    return d


def test_server_certificate_is_made_once_with_the_application_uri(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    own = pki.own_certificate(URI, "carbonscada testsite", ["localhost", "127.0.0.1"])
    cert = read_certificate(own.cert)
    key = cert.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [URI]
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert (own.key.stat().st_mode & 0o777) == 0o600
    first = thumbprint(cert)
    again = pki.own_certificate(URI, "carbonscada testsite", ["localhost"])
    assert thumbprint(read_certificate(again.cert)) == first  # reused, not remade
    other = pki.own_certificate("urn:carbonscada:othersite", "x", ["localhost"])
    assert thumbprint(read_certificate(other.cert)) != first  # the URI must match


async def test_unknown_client_is_filed_in_rejected_until_trusted(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    pki.create()
    check = ClientValidator(pki, trust_all=False)
    cert = client_cert()
    with pytest.raises(ServiceError) as err:
        await check(cert, description())
    assert err.value.code == StatusCodes.BadCertificateUntrusted
    assert list(pki.rejected_list()) == [thumbprint(cert)]
    pki.trust(read_certificate(next(iter(pki.rejected_list().values()))))
    assert pki.rejected_list() == {}
    await check(cert, description())  # now accepted
    pki.reject(thumbprint(cert))
    with pytest.raises(ServiceError):
        await check(cert, description())


async def test_uri_mismatch_is_refused_even_when_trusting_all(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    pki.create()
    check = ClientValidator(pki, trust_all=True)
    with pytest.raises(ServiceError) as err:
        await check(client_cert("urn:example:a"), description("urn:example:b"))
    assert err.value.code == StatusCodes.BadCertificateUriInvalid
    cert = client_cert()
    await check(cert, description())  # trust_all: trusted at first use
    assert thumbprint(cert) in pki.trusted_list()
