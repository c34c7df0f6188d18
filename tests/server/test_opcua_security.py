"""Secured OPC UA endpoints as a DCS integrator meets them, with a real asyncua client over
TCP: every policy in Sign and SignAndEncrypt, the server certificate made once and reused,
an unknown client certificate refused and filed until trusted, anonymous refused where
the plant does not allow it, and user names checked against the real user store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import ua
from asyncua.client.client import Client
from asyncua.crypto import cert_gen, security_policies
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaStatusCodeError
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from server.config import parse_config
from server.opcua.pki import Pki, read_certificate, thumbprint
from server.opcua.sink import OpcUaSink
from server.users import UserStore
from tests.conftest import free_port
from tests.fixtures.plant import plant_dict

OPERATOR = ("olga", "olga-pass-1")
CLIENT_URI = "urn:example:dcs-client"
POLICIES = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}
MODES = {"Sign": ua.MessageSecurityMode.Sign,
         "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt}


def client_files(tmp_path: Path, uri: str = CLIENT_URI) -> tuple[Path, Path]:
    """A client application-instance certificate and key, as a DCS would have."""
    key = cert_gen.generate_private_key()
    cert = cert_gen.generate_self_signed_app_certificate(
        key, "DCS", {}, [x509.UniformResourceIdentifier(uri)],
        [ExtendedKeyUsageOID.CLIENT_AUTH], days=30)
    cert_path, key_path = tmp_path / f"client-{thumbprint(cert)}.der", tmp_path / "client.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return cert_path, key_path


def secured_plant(port: int, tmp_path: Path, **opcua: Any) -> dict[str, Any]:
    d = plant_dict(opcua_port=port)
    d["opcua"] = {"endpoint": f"opc.tcp://127.0.0.1:{port}", "pki_dir": str(tmp_path / "pki"),
                  **opcua}
    return d


@pytest_asyncio.fixture
async def users(tmp_path: Path) -> UserStore:
    store = UserStore(tmp_path / "users.sqlite")
    store.add(OPERATOR[0], "operator", OPERATOR[1])
    return store


async def start(d: dict[str, Any], users: UserStore) -> OpcUaSink:
    sink = OpcUaSink(parse_config(d, "test_opcua_security"), users=users)
    await sink.start()
    return sink


async def secure_client(port: int, files: tuple[Path, Path], policy: str = "Basic256Sha256",
                        mode: str = "SignAndEncrypt", login: bool = True) -> Client:
    client = Client(f"opc.tcp://127.0.0.1:{port}")
    client.application_uri = CLIENT_URI
    await client.set_security(POLICIES[policy], str(files[0]), str(files[1]), mode=MODES[mode])
    if login:
        client.set_user(OPERATOR[0])
        client.set_password(OPERATOR[1])
    return client


async def read_site_value(client: Client) -> set[str]:
    """Browse names under Objects, through the secured session."""
    return {(await c.read_browse_name()).Name for c in await client.nodes.objects.get_children()}


@pytest_asyncio.fixture
async def trusting(tmp_path: Path, users: UserStore) -> AsyncIterator[tuple[int, OpcUaSink]]:
    port = free_port()
    sink = await start(secured_plant(port, tmp_path, trust_all_clients=True, anonymous=True),
                       users)
    yield port, sink
    await sink.stop()


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("policy", list(POLICIES))
async def test_every_policy_and_mode_serves_the_dcs(
        trusting: tuple[int, OpcUaSink], tmp_path: Path, policy: str, mode: str) -> None:
    port, _ = trusting
    files = client_files(tmp_path)
    if mode == "Sign":  # signed, not encrypted: no passwords, but anonymous reading
        with pytest.raises(UaStatusCodeError) as err:
            async with await secure_client(port, files, policy, mode):
                pass
        assert err.value.code == StatusCodes.BadUserAccessDenied
    client = await secure_client(port, files, policy, mode, login=mode == "SignAndEncrypt")
    async with client:
        assert "CarbonSCADA" in await read_site_value(client)
        endpoints = await client.get_endpoints()
    assert {e.SecurityPolicyUri.rsplit("#", 1)[1] for e in endpoints} == set(POLICIES)  # no None


async def test_untrusted_client_is_refused_until_trusted(tmp_path: Path,
                                                          users: UserStore) -> None:
    port = free_port()
    sink = await start(secured_plant(port, tmp_path), users)
    files = client_files(tmp_path)
    try:
        with pytest.raises(UaStatusCodeError) as err:
            async with await secure_client(port, files):
                pass
        assert err.value.code == StatusCodes.BadCertificateUntrusted
        pki = Pki(tmp_path / "pki")
        rejected = pki.rejected_list()
        assert list(rejected) == [thumbprint(read_certificate(files[0]))]
        pki.trust(read_certificate(next(iter(rejected.values()))))  # an engineer trusts it
        async with await secure_client(port, files) as client:  # no restart needed
            assert "CarbonSCADA" in await read_site_value(client)
    finally:
        await sink.stop()


async def test_anonymous_and_none_refused_unless_configured(tmp_path: Path,
                                                             users: UserStore) -> None:
    port = free_port()
    sink = await start(secured_plant(port, tmp_path, trust_all_clients=True), users)
    try:
        endpoints = await Client(f"opc.tcp://127.0.0.1:{port}").connect_and_get_server_endpoints()
        assert ua.MessageSecurityMode.None_ not in {e.SecurityMode for e in endpoints}
        with pytest.raises(ua.UaError, match="No matching endpoints"):  # no None endpoint
            async with Client(f"opc.tcp://127.0.0.1:{port}"):
                pass
        with pytest.raises(UaStatusCodeError) as err:  # encrypted, but anonymous
            async with await secure_client(port, client_files(tmp_path), login=False):
                pass
        assert err.value.code == StatusCodes.BadIdentityTokenRejected
    finally:
        await sink.stop()


async def test_server_certificate_is_reused_across_restarts(tmp_path: Path,
                                                            users: UserStore) -> None:
    port = free_port()
    seen = []
    for _ in range(2):
        sink = await start(secured_plant(port, tmp_path, trust_all_clients=True), users)
        try:
            endpoints = await Client(f"opc.tcp://127.0.0.1:{port}"
                                     ).connect_and_get_server_endpoints()
        finally:
            await sink.stop()
        seen.append({bytes(e.ServerCertificate) for e in endpoints})
    assert len(seen[0]) == 1 and seen[0] == seen[1]  # one certificate, the same after restart
    cert = x509.load_der_x509_certificate(next(iter(seen[0])))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "urn:carbonscada:testsite:server"]


async def test_passwords_only_on_an_encrypted_channel(tmp_path: Path, users: UserStore) -> None:
    port = free_port()
    sink = await start(secured_plant(port, tmp_path, trust_all_clients=True, allow_none=True,
                                     anonymous=True), users)
    files = client_files(tmp_path)
    try:
        plain = Client(f"opc.tcp://127.0.0.1:{port}")
        plain.set_user(OPERATOR[0])
        plain.set_password(OPERATOR[1])
        for client in (plain, await secure_client(port, files, mode="Sign")):
            with pytest.raises(UaStatusCodeError) as err:
                async with client:
                    pass
            assert err.value.code == StatusCodes.BadUserAccessDenied
        async with await secure_client(port, files, mode="SignAndEncrypt") as client:
            assert "CarbonSCADA" in await read_site_value(client)
        async with Client(f"opc.tcp://127.0.0.1:{port}") as anonymous:  # allowed here
            assert "CarbonSCADA" in await read_site_value(anonymous)
    finally:
        await sink.stop()
