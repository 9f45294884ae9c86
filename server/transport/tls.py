"""TLS for the server: certificate and key files, an optional client CA (mTLS), reloaded when
the files change (each new connection looks at their modification times; open connections keep
the certificate they started with), so a renewed certificate needs no restart."""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

from edgetune.errors import InvalidArgument

log = logging.getLogger("edgetune.server")


@dataclass(frozen=True)
class TlsFiles:
    cert: Path  # PEM certificate chain, the server's first
    key: Path  # PEM private key
    client_ca: Path | None = None  # PEM CA bundle: clients must present a certificate it signed (mTLS)

    def _stamp(self) -> tuple:
        return tuple((p.stat().st_mtime_ns, p.stat().st_size) for p in (self.cert, self.key, self.client_ca) if p)

    def _configuration(self):
        """The files as a grpc certificate configuration, after checking they load and match."""
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(self.cert, self.key)
            if self.client_ca:
                ssl.create_default_context(cafile=str(self.client_ca))
            pair = (self.key.read_bytes(), self.cert.read_bytes())
            ca = self.client_ca.read_bytes() if self.client_ca else None
        except (OSError, ssl.SSLError) as e:
            raise InvalidArgument("--tls-cert", f"cannot use the TLS files: {e}") from None
        return grpc.ssl_server_certificate_configuration([pair], root_certificates=ca)

    def credentials(self) -> grpc.ServerCredentials:
        initial, state = self._configuration(), {"stamp": self._stamp()}

        def fetch():
            try:
                stamp = self._stamp()
                if stamp == state["stamp"]:
                    return None
                configuration = self._configuration()
            except (OSError, InvalidArgument) as e:  # mid-rotation or broken: keep serving the old one
                log.error("TLS files not reloaded, keeping the current certificate: %s", e)
                return None
            state["stamp"] = stamp
            log.info("TLS certificate reloaded from %s", self.cert)
            return configuration

        return grpc.dynamic_ssl_server_credentials(initial, fetch,
                                                   require_client_authentication=self.client_ca is not None)
