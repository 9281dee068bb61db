"""Connect CA endpoints, driven through py-consul 1.8.0 and checked with
verifiers from outside Trellis.

Covers: connect.ca.roots / agent.connect.ca.roots (shape, IDs and key IDs
against the certificates themselves, ?pem=true), agent.connect.ca.leaf (the
response fields, the certificate profile, the private key, caching of the
same certificate, X-Consul-Index, a blocking query that times out),
connect.ca.configuration (defaults) and connect.ca.update_configuration
(rejection of bad values, then a root rotation to RSA with cross-signing).

Outside verifiers of a leaf:
- ``cryptography``: the signature checked by hand with the issuing root's
  public key (ECDSA or RSA PKCS#1 v1.5, SHA-256), and RFC 5280 path
  validation with ``cryptography.x509.verification`` (client EKU policy);
- ``openssl verify`` (subprocess), with ``-x509_strict`` and the sslclient /
  sslserver purposes;
- the ``spiffe`` package's ``X509Svid.parse`` (X509-SVID rules: exactly one
  SPIFFE URI SAN, leaf is not a CA, digitalSignature, CA intermediates) and
  ``X509Bundle.parse`` for the trust bundle. That package (0.3.2) has no
  chain-verification helper of its own (verification lives behind the SPIRE
  Workload API), so the bundle is only parsed and the signature check is done
  with ``cryptography``;
- Python's ``ssl`` module: two leaves complete a mutual-TLS handshake.

Wire format (py-consul): GET /v1/connect/ca/roots?pem=0 (py-consul always sends
``pem=<int>``); GET /v1/agent/connect/ca/roots; GET
/v1/agent/connect/ca/leaf/<service>; GET/PUT /v1/connect/ca/configuration with
{"Provider", "Config"}. py-consul has no call for ``?pem=true`` (its JSON
callback cannot read a PEM body) nor for ``?index=&wait=`` or the headers of
the leaf endpoint: those use ``raw_request``.

``test_root_rotation_cross_signs_and_reissues_leaves`` changes the
datacenter's CA for the rest of the session, so it is the last test of this
module and takes nothing from the tests above it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import consul
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store
from spiffe import TrustDomain, X509Bundle, X509Svid

from compat_util import Timed, raw_request, run_later, uniq, wait_until

# Consul's default CA configuration of a dev agent.
DEFAULT_CA_CONFIG = {
    "LeafCertTTL": "72h",
    "IntermediateCertTTL": "8760h",
    "RootCertTTL": "87600h",
    "PrivateKeyType": "ec",
    "PrivateKeyBits": 256,
    "CSRMaxPerSecond": 50,
    "CSRMaxConcurrent": 0,
}
# Consul backdates leaf certificates by one minute.
BACKDATE = dt.timedelta(minutes=1)
# Slack for clock rounding (certificate times have whole seconds).
TIME_SLACK = dt.timedelta(seconds=3)
# Allowed overshoot of a timed-out wait beyond wait * (1 + 1/16).
SLACK = 2.0
# After a root change Consul's agent waits a random jitter of up to 20 s
# (caChangeInitialJitter) before it asks for a new leaf, so allow a little
# more than that; Trellis re-issues at once and the wait ends as soon as the
# new certificate shows up.
REISSUE_TIMEOUT = 25.0

# The leader initialises the CA shortly after it is elected; until then the
# roots are empty and leaf requests fail ("CA is uninitialized"), as in Consul.
CA_READY_TIMEOUT = 15.0

PEM_CERT_RE = re.compile(r"-----BEGIN CERTIFICATE-----\s.*?-----END CERTIFICATE-----", re.S)


# --------------------------------------------------------------------------
# helpers


def _pem_blocks(text: str) -> list[str]:
    """The PEM certificate blocks of ``text``, in order."""
    return PEM_CERT_RE.findall(text)


def _certs(text: str) -> list[x509.Certificate]:
    return [x509.load_pem_x509_certificate(block.encode()) for block in _pem_blocks(text)]


def _cert(text: str) -> x509.Certificate:
    certs = _certs(text)
    assert len(certs) == 1, f"expected exactly one certificate, got {len(certs)}"
    return certs[0]


def _colon_hex(data: bytes) -> str:
    return ":".join(f"{b:02x}" for b in data)


def _serial_hex(serial: int) -> str:
    """Consul's encoding of a serial number: big-endian bytes, colon hex."""
    return _colon_hex(serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big"))


def _ski(cert: x509.Certificate) -> bytes:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def _aki(cert: x509.Certificate) -> bytes | None:
    return cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier


def _uri_sans(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.UniformResourceIdentifier)


def _spki(key: Any) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _go_duration(text: str) -> dt.timedelta:
    """Parse the Go durations Consul prints ("72h", "1h0m0s", "30m")."""
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"unexpected duration {text!r}"
    return dt.timedelta(seconds=sum(float(n) * units[u] for n, u in parts))


def _rfc3339(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _verify_signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    """Check ``cert``'s signature with ``issuer``'s public key by hand:
    ECDSA/SHA-256 for an EC issuer, RSA PKCS#1 v1.5/SHA-256 for an RSA one."""
    assert cert.issuer == issuer.subject, f"issuer {cert.issuer} is not {issuer.subject}"
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256), cert.signature_hash_algorithm
    key = issuer.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, rsa.RSAPublicKey):
        key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), hashes.SHA256())
    else:
        raise AssertionError(f"unexpected issuer key type {type(key).__name__}")
    # The same check through cryptography's own helper (issuer name + signature).
    cert.verify_directly_issued_by(issuer)


def _path_validate(leaf: x509.Certificate, trusted: list[x509.Certificate], untrusted: list[x509.Certificate]):
    """RFC 5280 path validation with cryptography's verifier (client policy:
    EKU clientAuth required). Returns the validated chain, leaf first."""
    verifier = PolicyBuilder().store(Store(trusted)).build_client_verifier()
    verified = verifier.verify(leaf, untrusted)
    return verified.chain


def _openssl(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed on this machine")
    return subprocess.run(["openssl", *args], cwd=tmp_path, capture_output=True, text=True, timeout=30)


def _openssl_verify(
    tmp_path: Path, cafile_pems: list[str], leaf_pem: str, untrusted_pems: list[str] | None = None, *extra: str
) -> subprocess.CompletedProcess:
    """``openssl verify -CAfile <cafile_pems> [-untrusted <untrusted_pems>] <leaf>``;
    writes the files under ``tmp_path`` and returns the completed process."""
    tag = uniq("v")
    ca = tmp_path / f"{tag}-ca.pem"
    ca.write_text("".join(p if p.endswith("\n") else p + "\n" for p in cafile_pems))
    leaf = tmp_path / f"{tag}-leaf.pem"
    leaf.write_text(leaf_pem if leaf_pem.endswith("\n") else leaf_pem + "\n")
    args = ["verify", *extra, "-CAfile", str(ca)]
    if untrusted_pems:
        untrusted = tmp_path / f"{tag}-untrusted.pem"
        untrusted.write_text("".join(p if p.endswith("\n") else p + "\n" for p in untrusted_pems))
        args += ["-untrusted", str(untrusted)]
    return _openssl(tmp_path, *args, str(leaf))


def _assert_openssl_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0 and proc.stdout.strip().endswith(": OK"), (
        f"openssl verify failed (rc={proc.returncode}):\n{proc.stdout}{proc.stderr}"
    )


def _active_root(roots: dict[str, Any]) -> dict[str, Any]:
    active = [r for r in roots["Roots"] if r["Active"]]
    assert len(active) == 1, f"expected one active root, got {[r['ID'] for r in active]}"
    assert active[0]["ID"] == roots["ActiveRootID"]
    return active[0]


def _datacenter(client: consul.Consul) -> str:
    return client.agent.self()["Config"]["Datacenter"]


def _issue(client: consul.Consul, service: str) -> tuple[dict[str, Any], dt.datetime, dt.datetime]:
    """GET a leaf for ``service`` through py-consul; returns it with the wall
    clock just before and just after the call."""
    before = _now()
    leaf = client.agent.connect.ca.leaf(service)
    after = _now()
    assert isinstance(leaf, dict), leaf
    return leaf, before, after


def _raw_leaf(trellis, service: str, query: str = "", timeout: float = 60.0) -> tuple[int, dict[str, Any]]:
    """GET the leaf with urllib: returns (X-Consul-Index, body)."""
    resp = raw_request(trellis.base_url, "GET", f"/v1/agent/connect/ca/leaf/{service}{query}", timeout=timeout)
    assert resp.status == 200, f"{resp.status} {resp.body}"
    index = {k.lower(): v for k, v in resp.headers.items()}.get("x-consul-index")
    assert index is not None and index.isdigit(), f"no X-Consul-Index in {resp.headers}"
    return int(index), resp.json()


@pytest.fixture(scope="module", autouse=True)
def ca_ready(trellis):
    """Wait until the CA has an active root before the first test."""
    c = trellis.new_client()
    wait_until(
        c.connect.ca.roots,
        lambda r: bool(r and r.get("ActiveRootID") and r.get("Roots")),
        timeout=CA_READY_TIMEOUT,
        what="an initialised Connect CA",
    )


# --------------------------------------------------------------------------
# roots


def test_roots_describe_their_certificates(client):
    roots = client.connect.ca.roots()
    assert set(roots) >= {"ActiveRootID", "TrustDomain", "Roots"}
    trust_domain = roots["TrustDomain"]
    cluster_id, _, suffix = trust_domain.partition(".")
    assert suffix == "consul", trust_domain
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", cluster_id), trust_domain
    active = _active_root(roots)

    for root in roots["Roots"]:
        cert = _cert(root["RootCert"])
        assert root["ID"] == _colon_hex(hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).digest())
        assert root["SigningKeyID"] == _colon_hex(_ski(cert))
        assert root["ExternalTrustDomain"] == cluster_id
        assert isinstance(root["Name"], str) and root["Name"]
        # Consul reports the low 64 bits of the certificate's serial number
        # (Go's big.Int.Uint64()).
        assert root["SerialNumber"] == cert.serial_number & (2**64 - 1)
        assert _rfc3339(root["NotBefore"]) == cert.not_valid_before_utc
        assert _rfc3339(root["NotAfter"]) == cert.not_valid_after_utc
        assert root["IntermediateCerts"] in (None, []) or all(_pem_blocks(p) for p in root["IntermediateCerts"])
        assert root["ModifyIndex"] >= root["CreateIndex"] >= 1

        # A self-signed CA for the trust domain.
        assert cert.subject == cert.issuer
        _verify_signed_by(cert, cert)
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
        assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign is True
        assert _uri_sans(cert) == [f"spiffe://{trust_domain}"]
        key = cert.public_key()
        if root["PrivateKeyType"] == "ec":
            assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size == root["PrivateKeyBits"]
        else:
            assert root["PrivateKeyType"] == "rsa", root["PrivateKeyType"]
            assert isinstance(key, rsa.RSAPublicKey) and key.key_size == root["PrivateKeyBits"]

    assert active["ID"] == roots["ActiveRootID"]


def test_agent_roots_match_catalog_roots(client):
    server = client.connect.ca.roots()
    agent = client.agent.connect.ca.roots()
    assert agent["ActiveRootID"] == server["ActiveRootID"]
    assert agent["TrustDomain"] == server["TrustDomain"]
    assert [(r["ID"], r["RootCert"], r["Active"]) for r in agent["Roots"]] == [
        (r["ID"], r["RootCert"], r["Active"]) for r in server["Roots"]
    ]


def test_roots_pem_is_the_certificate_chain(client, trellis):
    roots = client.connect.ca.roots()  # py-consul sends pem=0: JSON
    resp = raw_request(trellis.base_url, "GET", "/v1/connect/ca/roots?pem=true")
    assert resp.status == 200, resp.body
    content_type = {k.lower(): v for k, v in resp.headers.items()}["content-type"]
    assert content_type.split(";")[0].strip() == "application/pem-certificate-chain"
    # Consul writes each root followed by its intermediates.
    expected = []
    for root in roots["Roots"]:
        expected += _pem_blocks(root["RootCert"])
        for inter in root["IntermediateCerts"] or []:
            expected += _pem_blocks(inter)
    assert _pem_blocks(resp.body) == expected
    assert [c.subject for c in _certs(resp.body)]  # parses


# --------------------------------------------------------------------------
# leaf certificates


def test_leaf_response_fields(client):
    service = uniq("ca-leaf")
    leaf, before, after = _issue(client, service)
    roots = client.connect.ca.roots()
    config = client.connect.ca.configuration()

    assert leaf["Service"] == service
    assert leaf["ServiceURI"] == f"spiffe://{roots['TrustDomain']}/ns/default/dc/{_datacenter(client)}/svc/{service}"
    cert = _certs(leaf["CertPEM"])[0]
    assert leaf["SerialNumber"] == _serial_hex(cert.serial_number)
    assert _rfc3339(leaf["ValidAfter"]) == cert.not_valid_before_utc
    assert _rfc3339(leaf["ValidBefore"]) == cert.not_valid_after_utc
    assert leaf["ModifyIndex"] >= leaf["CreateIndex"] >= 1

    # Issued for this request (a new service name), backdated by a minute.
    not_before = cert.not_valid_before_utc
    assert before - BACKDATE - TIME_SLACK <= not_before <= after - BACKDATE + TIME_SLACK, (
        f"NotBefore {not_before} is not about one minute before {before}..{after}"
    )
    assert cert.not_valid_after_utc - not_before == _go_duration(config["Config"]["LeafCertTTL"])


def test_leaf_certificate_profile(client):
    service = uniq("ca-prof")
    leaf, _, _ = _issue(client, service)
    cert = _certs(leaf["CertPEM"])[0]

    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.value.ca is False
    key_usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert key_usage.digital_signature is True
    assert key_usage.key_cert_sign is False
    assert _uri_sans(cert) == [leaf["ServiceURI"]]


def test_leaf_chains_to_active_root_cryptography(client):
    service = uniq("ca-chain")
    leaf, _, _ = _issue(client, service)
    roots = client.connect.ca.roots()
    active = _cert(_active_root(roots)["RootCert"])
    chain = _certs(leaf["CertPEM"])
    cert, intermediates = chain[0], chain[1:]

    # Signature by hand: signed directly by the active root, or through the
    # intermediates that follow the leaf in CertPEM.
    issuer_chain = [*intermediates, active]
    _verify_signed_by(cert, issuer_chain[0])
    for child, parent in zip(issuer_chain, issuer_chain[1:]):
        _verify_signed_by(child, parent)
    assert _aki(cert) == _ski(issuer_chain[0])

    # RFC 5280 path validation, trusting the active root only.
    validated = _path_validate(cert, [active], intermediates)
    assert validated[0] == cert and validated[-1] == active


def test_leaf_private_key_matches_certificate(client):
    leaf, _, _ = _issue(client, uniq("ca-key"))
    pem = leaf["PrivateKeyPEM"]
    assert pem.startswith("-----BEGIN EC PRIVATE KEY-----"), pem.splitlines()[0]  # SEC1
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    cert = _certs(leaf["CertPEM"])[0]
    assert _spki(key.public_key()) == _spki(cert.public_key())
    # And the key really signs for that certificate.
    message = b"trellis connect ca"
    signature = key.sign(message, ec.ECDSA(hashes.SHA256()))
    cert.public_key().verify(signature, message, ec.ECDSA(hashes.SHA256()))


def test_leaf_openssl_verify(client, tmp_path):
    leaf, _, _ = _issue(client, uniq("ca-ossl"))
    roots = client.connect.ca.roots()
    root_pems = [r["RootCert"] for r in roots["Roots"]]
    blocks = _pem_blocks(leaf["CertPEM"])
    _assert_openssl_ok(_openssl_verify(tmp_path, root_pems, blocks[0], blocks[1:]))
    for purpose in ("sslclient", "sslserver"):
        _assert_openssl_ok(_openssl_verify(tmp_path, root_pems, blocks[0], blocks[1:], "-x509_strict", "-purpose", purpose))


def test_leaf_spiffe_x509_svid(client):
    service = uniq("ca-svid")
    leaf, _, _ = _issue(client, service)
    roots = client.connect.ca.roots()

    svid = X509Svid.parse(leaf["CertPEM"].encode(), leaf["PrivateKeyPEM"].encode())
    assert str(svid.spiffe_id) == leaf["ServiceURI"]
    assert svid.spiffe_id.trust_domain.name == roots["TrustDomain"]
    assert svid.spiffe_id.path == f"/ns/default/dc/{_datacenter(client)}/svc/{service}"
    assert svid.leaf.serial_number == _certs(leaf["CertPEM"])[0].serial_number
    assert len(svid.cert_chain) == len(_pem_blocks(leaf["CertPEM"]))
    assert _spki(svid.private_key.public_key()) == _spki(svid.leaf.public_key())

    bundle_pem = "".join(r["RootCert"] for r in roots["Roots"]).encode()
    bundle = X509Bundle.parse(TrustDomain(roots["TrustDomain"]), bundle_pem)
    assert bundle.trust_domain == svid.spiffe_id.trust_domain
    authorities = {c.subject: c for c in bundle.x509_authorities}
    top = svid.cert_chain[-1]
    assert top.issuer in authorities, f"{top.issuer} is not in the bundle {list(authorities)}"
    _verify_signed_by(top, authorities[top.issuer])


def test_leaves_complete_mutual_tls(client, tmp_path):
    """Two leaves of one CA authenticate each other in a TLS handshake."""
    roots = client.connect.ca.roots()
    ca_pem = "".join(r["RootCert"] for r in roots["Roots"])
    server_leaf, _, _ = _issue(client, uniq("ca-tls-srv"))
    client_leaf, _, _ = _issue(client, uniq("ca-tls-cli"))

    def context(purpose: ssl.Purpose, leaf: dict[str, Any], tmp: Path) -> ssl.SSLContext:
        ctx = ssl.create_default_context(purpose, cadata=ca_pem)
        ctx.check_hostname = False  # Connect leaves name services by URI SAN only
        ctx.verify_mode = ssl.CERT_REQUIRED
        chain, key = tmp.with_suffix(".crt"), tmp.with_suffix(".key")
        chain.write_text(leaf["CertPEM"])
        key.write_text(leaf["PrivateKeyPEM"])
        ctx.load_cert_chain(str(chain), str(key))
        return ctx

    server_ctx = context(ssl.Purpose.CLIENT_AUTH, server_leaf, tmp_path / "server")
    client_ctx = context(ssl.Purpose.SERVER_AUTH, client_leaf, tmp_path / "client")
    left, right = socket.socketpair()
    left.settimeout(10)
    right.settimeout(10)
    seen: dict[str, Any] = {}

    def serve() -> None:
        with server_ctx.wrap_socket(left, server_side=True) as tls:
            seen["client"] = tls.getpeercert()
            tls.sendall(tls.recv(5).upper())

    server = run_later(0, serve)
    with client_ctx.wrap_socket(right, server_side=False) as tls:
        seen["server"] = tls.getpeercert()
        tls.sendall(b"hello")
        assert tls.recv(5) == b"HELLO"
    server.join()

    assert ("URI", server_leaf["ServiceURI"]) in seen["server"]["subjectAltName"]
    assert ("URI", client_leaf["ServiceURI"]) in seen["client"]["subjectAltName"]


def test_distinct_services_get_distinct_leaves(client):
    first, _, _ = _issue(client, uniq("ca-one"))
    second, _, _ = _issue(client, uniq("ca-two"))
    assert first["SerialNumber"] != second["SerialNumber"]
    assert first["PrivateKeyPEM"] != second["PrivateKeyPEM"]
    assert first["ServiceURI"] != second["ServiceURI"]


def test_leaf_is_cached_until_renewal(client, trellis):
    service = uniq("ca-same")
    first, _, _ = _issue(client, service)
    second, _, _ = _issue(client, service)
    index, raw = _raw_leaf(trellis, service)
    for again in (second, raw):
        assert again["SerialNumber"] == first["SerialNumber"]
        assert again["CertPEM"] == first["CertPEM"]
        assert again["PrivateKeyPEM"] == first["PrivateKeyPEM"]
    # Consul sets X-Consul-Index to the certificate's ModifyIndex.
    assert index == raw["ModifyIndex"]


def test_leaf_blocking_query_times_out_with_same_cert(client, trellis):
    service = uniq("ca-block")
    index, leaf = _raw_leaf(trellis, service)

    wait = 2.0
    with Timed() as t:
        new_index, again = _raw_leaf(trellis, service, f"?index={index}&wait={wait:g}s")

    assert t.elapsed >= wait * 0.95, f"returned after {t.elapsed:.2f}s, before the {wait}s wait"
    assert t.elapsed <= wait * (1 + 1 / 16) + SLACK, f"took {t.elapsed:.2f}s for a {wait}s wait"
    assert again["SerialNumber"] == leaf["SerialNumber"]
    assert new_index == index


# --------------------------------------------------------------------------
# configuration


def test_ca_configuration_defaults(client):
    config = client.connect.ca.configuration()
    assert config["Provider"] == "consul"
    for key, value in DEFAULT_CA_CONFIG.items():
        assert config["Config"].get(key) == value, f"Config[{key!r}] = {config['Config'].get(key)!r}"
    assert config["ForceWithoutCrossSigning"] is False
    assert config["ModifyIndex"] >= config["CreateIndex"] >= 1


@pytest.mark.parametrize(
    "change, message",
    [
        pytest.param({"LeafCertTTL": "30m"}, "leaf cert ttl", id="leaf-ttl-30m"),
        pytest.param({"LeafCertTTL": "9000h"}, None, id="leaf-ttl-over-a-year"),
        pytest.param({"IntermediateCertTTL": "1h"}, None, id="intermediate-ttl-1h"),
        pytest.param({"PrivateKeyType": "ec", "PrivateKeyBits": 2048}, None, id="ec-2048-bits"),
        pytest.param({"PrivateKeyType": "rsa", "PrivateKeyBits": 1024}, None, id="rsa-1024-bits"),
    ],
)
def test_bad_configuration_is_rejected_and_changes_nothing(client, change, message):
    before = client.connect.ca.configuration()
    roots_before = client.connect.ca.roots()

    with pytest.raises(consul.ConsulException) as err:
        client.connect.ca.update_configuration("consul", {**before["Config"], **change})
    assert isinstance(err.value, consul.exceptions.BadRequest), f"expected 400, got: {err.value}"
    assert str(err.value).startswith("400 "), err.value
    if message:
        assert message in str(err.value).lower(), err.value

    after = client.connect.ca.configuration()
    assert after == before
    assert client.connect.ca.roots()["ActiveRootID"] == roots_before["ActiveRootID"]


# --------------------------------------------------------------------------
# rotation: keep this test last, it changes the CA for the rest of the session


def test_root_rotation_cross_signs_and_reissues_leaves(client, trellis, tmp_path):
    service = uniq("ca-rot")
    roots_before = client.connect.ca.roots()
    config_before = client.connect.ca.configuration()
    old_root = _active_root(roots_before)
    old_root_cert = _cert(old_root["RootCert"])
    old_index, old_leaf = _raw_leaf(trellis, service)
    target = ("rsa", 2048)
    if (old_root["PrivateKeyType"], old_root["PrivateKeyBits"]) == target:  # an agent rotated before
        target = ("ec", 256)

    # A blocking query on the leaf, started before the change, must return
    # with the re-issued certificate.
    watch_wait = REISSUE_TIMEOUT + 5
    woken: list[tuple[float, int, dict[str, Any]]] = []

    def watch() -> None:
        with Timed() as t:
            index, leaf = _raw_leaf(trellis, service, f"?index={old_index}&wait={watch_wait:g}s", timeout=watch_wait + 30)
        woken.append((t.elapsed, index, leaf))

    watcher = run_later(0, watch)
    time.sleep(0.3)

    new_config = {**config_before["Config"], "PrivateKeyType": target[0], "PrivateKeyBits": target[1]}
    assert client.connect.ca.update_configuration("consul", new_config) is True

    # Configuration
    config = client.connect.ca.configuration()
    assert config["Config"]["PrivateKeyType"] == target[0]
    assert config["Config"]["PrivateKeyBits"] == target[1]
    assert config["CreateIndex"] == config_before["CreateIndex"]
    assert config["ModifyIndex"] > config_before["ModifyIndex"]

    # Roots: the old one stays, inactive; a new active one with a certificate
    # cross-signed by the old root's key.
    roots = wait_until(
        client.connect.ca.roots, lambda r: r["ActiveRootID"] != old_root["ID"], what="a new active root"
    )
    assert roots["TrustDomain"] == roots_before["TrustDomain"]
    assert len(roots["Roots"]) == len(roots_before["Roots"]) + 1
    by_id = {r["ID"]: r for r in roots["Roots"]}
    assert by_id[old_root["ID"]]["Active"] is False
    assert by_id[old_root["ID"]]["RootCert"] == old_root["RootCert"]
    new_root = _active_root(roots)
    assert new_root["PrivateKeyType"] == target[0]
    assert new_root["PrivateKeyBits"] == target[1]
    new_root_cert = _cert(new_root["RootCert"])
    new_key = new_root_cert.public_key()
    if target[0] == "rsa":
        assert isinstance(new_key, rsa.RSAPublicKey) and new_key.key_size == 2048
    _verify_signed_by(new_root_cert, new_root_cert)
    assert _uri_sans(new_root_cert) == [f"spiffe://{roots['TrustDomain']}"]

    assert isinstance(new_root["IntermediateCerts"], list) and len(new_root["IntermediateCerts"]) == 1
    cross_pem = new_root["IntermediateCerts"][0]
    cross = _cert(cross_pem)
    assert cross.subject == new_root_cert.subject
    assert _spki(cross.public_key()) == _spki(new_root_cert.public_key())
    assert _ski(cross) == _ski(new_root_cert)
    assert _aki(cross) == _ski(old_root_cert)
    assert cross.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    _verify_signed_by(cross, old_root_cert)  # signed by the OLD root's key

    agent_roots = client.agent.connect.ca.roots()
    assert agent_roots["ActiveRootID"] == new_root["ID"]
    assert sorted(r["ID"] for r in agent_roots["Roots"]) == sorted(by_id)

    pem = raw_request(trellis.base_url, "GET", "/v1/connect/ca/roots?pem=true")
    assert pem.status == 200
    pem_blocks = _pem_blocks(pem.body)
    for block in (*_pem_blocks(old_root["RootCert"]), *_pem_blocks(new_root["RootCert"]), *_pem_blocks(cross_pem)):
        assert block in pem_blocks

    # The old leaf still verifies against the bundle of both roots.
    old_leaf_pem = _pem_blocks(old_leaf["CertPEM"])[0]
    _assert_openssl_ok(_openssl_verify(tmp_path, [old_root["RootCert"], new_root["RootCert"]], old_leaf_pem))

    # The agent re-issues the leaf under the new root.
    new_leaf = wait_until(
        lambda: client.agent.connect.ca.leaf(service),
        lambda leaf: leaf["SerialNumber"] != old_leaf["SerialNumber"],
        timeout=REISSUE_TIMEOUT,
        interval=0.2,
        what="a re-issued leaf",
    )
    chain = _certs(new_leaf["CertPEM"])
    new_leaf_cert = chain[0]
    assert new_leaf["ServiceURI"] == old_leaf["ServiceURI"]
    assert _uri_sans(new_leaf_cert) == [new_leaf["ServiceURI"]]
    _verify_signed_by(new_leaf_cert, new_root_cert)
    assert _aki(new_leaf_cert) == _ski(new_root_cert)
    # Consul puts the active root's cross-signed certificates after the leaf.
    assert chain[1:] == [cross]
    # Consul's agent always makes EC P-256 leaf keys, whatever the CA's key type.
    new_leaf_key = serialization.load_pem_private_key(new_leaf["PrivateKeyPEM"].encode(), password=None)
    assert isinstance(new_leaf_key, ec.EllipticCurvePrivateKey) and isinstance(new_leaf_key.curve, ec.SECP256R1)
    assert _spki(new_leaf_key.public_key()) == _spki(new_leaf_cert.public_key())

    new_leaf_pem = _pem_blocks(new_leaf["CertPEM"])[0]
    # Against the OLD root alone, with the cross-signed certificate offered as untrusted ...
    _assert_openssl_ok(_openssl_verify(tmp_path, [old_root["RootCert"]], new_leaf_pem, [cross_pem]))
    # ... which is needed: without it the old root alone does not verify it.
    without_cross = _openssl_verify(tmp_path, [old_root["RootCert"]], new_leaf_pem)
    assert without_cross.returncode != 0, without_cross.stdout
    # ... and against the new root.
    _assert_openssl_ok(_openssl_verify(tmp_path, [new_root["RootCert"]], new_leaf_pem))
    # cryptography's path validation agrees.
    validated = _path_validate(new_leaf_cert, [old_root_cert], [cross])
    assert validated[-1] == old_root_cert
    validated = _path_validate(new_leaf_cert, [new_root_cert], [])
    assert validated[-1] == new_root_cert
    # And the spiffe package accepts the new chain (leaf + cross-signed CA).
    svid = X509Svid.parse(new_leaf["CertPEM"].encode(), new_leaf["PrivateKeyPEM"].encode())
    assert str(svid.spiffe_id) == new_leaf["ServiceURI"]
    assert len(svid.cert_chain) == 2

    # The blocking query was woken by the new certificate.
    watcher.join(timeout=watch_wait + 40)
    assert woken, "the blocking leaf query did not return"
    elapsed, woken_index, woken_leaf = woken[0]
    assert woken_leaf["SerialNumber"] != old_leaf["SerialNumber"], (
        f"blocking query returned the old certificate after {elapsed:.2f}s"
    )
    assert elapsed < watch_wait, f"blocking query returned only at its {watch_wait}s wait"
    assert woken_index > old_index
