"""TLS for the RTMPS listener: load a certificate, or make a self-signed one for local use and tests."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path


def load_server_context(cert_file: str | Path, key_file: str | Path) -> ssl.SSLContext:
    """A server SSLContext with the PEM certificate chain and key (TLS 1.2 or newer)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert_file), str(key_file))
    return context


def generate_self_signed(
    common_name: str = "localhost", *, valid_days: int = 365, hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
) -> tuple[bytes, bytes]:
    """A self-signed certificate and its private key, both PEM; `hosts` go into subjectAltName."""
    # Imported here: cryptography's bindings take ~9 MB of a node's RSS, and only a self-signed start needs them.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    alt_names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate a little clock skew
        .not_valid_after(now + datetime.timedelta(days=valid_days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert_pem, key_pem


def write_self_signed(directory: str | Path, common_name: str = "localhost") -> tuple[Path, Path]:
    """Write `cert.pem` and `key.pem` (mode 0600) into `directory`; returns their paths."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    cert_pem, key_pem = generate_self_signed(common_name)
    cert_path = folder / "cert.pem"
    key_path = folder / "key.pem"
    cert_path.write_bytes(cert_pem)
    key_path.touch(mode=0o600)
    key_path.write_bytes(key_pem)
    return cert_path, key_path
