//! Transport security bound to the chain (docs/chat.md, "Transport").
//!
//! A concierge serves TLS 1.3 with a **raw public key** (RFC 7250) instead
//! of a certificate: its Ed25519 server key, the one its `~server` record
//! publishes. A client accepts the connection only if that key is the key in
//! the server's *verified* record, so no certificate authority is involved
//! and a man in the middle with any other key is refused before a byte of
//! the session (a token, a deposit) is sent.
//!
//! URL schemes in a `~server` record:
//! * `https://` - TLS with the record key (the default);
//! * `https+ca://` - the operator's own TLS terminator with a certificate
//!   from a public CA, checked with the platform's roots (weaker: it trusts
//!   the CAs; receipts are still checked against the record key);
//! * `http://` - plain, accepted for loopback only: clients never send a
//!   token over plain HTTP to another host.

use std::sync::Arc;
use std::time::Duration;

use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{
    CertificateDer, PrivatePkcs8KeyDer, ServerName, SubjectPublicKeyInfoDer, UnixTime,
};
use rustls::{DigitallySignedStruct, SignatureScheme};
use xirtam_proofs::{PublicKey, SecretKey};

/// DER prefix of an Ed25519 `SubjectPublicKeyInfo` (RFC 8410): the key's
/// 32 bytes follow.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// DER prefix of an Ed25519 PKCS#8 private key (RFC 8410): the seed's 32
/// bytes follow.
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Scheme of a URL served through the operator's own TLS terminator with a
/// CA certificate.
pub const CA_SCHEME: &str = "https+ca://";

/// A TLS setup failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// rustls refused the configuration.
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// The HTTP client could not be built for the URL.
    #[error("cannot connect to {url}: {reason}")]
    Client {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
}

/// The DER `SubjectPublicKeyInfo` of an Ed25519 key: what a concierge
/// presents as its raw public key.
pub fn spki(key: &PublicKey) -> Vec<u8> {
    [&SPKI_PREFIX[..], &key.0].concat()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server side: TLS 1.3 presenting `key` (the server key of the
/// `~server` record) as a raw public key.
pub fn server_config(key: &SecretKey) -> Result<rustls::ServerConfig, TlsError> {
    let der = PrivatePkcs8KeyDer::from([&PKCS8_PREFIX[..], &key.to_seed()].concat());
    let signer = rustls::crypto::ring::sign::any_eddsa_type(&der)?;
    let certified =
        rustls::sign::CertifiedKey::new(vec![CertificateDer::from(spki(&key.public()))], signer);
    Ok(rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(
            rustls::server::AlwaysResolvesServerRawPublicKeys::new(Arc::new(certified)),
        )))
}

/// Accepts exactly one raw public key: the record's.
#[derive(Debug)]
struct RecordKey {
    spki: Vec<u8>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for RecordKey {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.spki.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &SubjectPublicKeyInfoDer::from(cert.as_ref()),
            dss,
            &self.algs,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

/// The client side: TLS 1.3 accepting only `key` (from the server's
/// verified record) as the server's raw public key.
pub fn client_config(key: &PublicKey) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let algs = provider.signature_verification_algorithms;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(RecordKey {
            spki: spki(key),
            algs,
        }))
        .with_no_client_auth())
}

/// Is `url` plain HTTP to a host other than loopback? Clients send no
/// token there.
pub fn plain_remote(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    !loopback
}

/// An HTTP client for a concierge at `url` whose verified record carries
/// `key`: record-bound TLS for `https://`, the platform's roots for
/// `https+ca://`, plain for `http://`.
pub fn concierge_client(
    url: &str,
    key: &PublicKey,
    timeout: Duration,
    max_response: u32,
) -> Result<HttpClient, TlsError> {
    let builder = HttpClientBuilder::default()
        .request_timeout(timeout)
        .max_response_size(max_response)
        .max_request_size(1 << 20);
    let fail = |reason: String| TlsError::Client {
        url: url.to_owned(),
        reason,
    };
    let built = if url.starts_with("https://") {
        builder
            .with_custom_cert_store(client_config(key)?)
            .build(url)
    } else if let Some(rest) = url.strip_prefix(CA_SCHEME) {
        builder.build(format!("https://{rest}"))
    } else {
        builder.build(url)
    };
    built.map_err(|e| fail(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_remote_urls() {
        for u in [
            "http://127.0.0.1:8650",
            "http://localhost:1",
            "http://[::1]:5/x",
            "https://example.org",
            "https+ca://example.org",
        ] {
            assert!(!plain_remote(u), "{u}");
        }
        for u in [
            "http://example.org",
            "http://10.0.0.1:8650",
            "http://[2001:db8::1]:1",
        ] {
            assert!(plain_remote(u), "{u}");
        }
    }

    #[test]
    fn configs_build_and_keys_encode() {
        let k = SecretKey::from_seed([5; 32]);
        server_config(&k).expect("server config");
        client_config(&k.public()).expect("client config");
        let s = spki(&k.public());
        assert_eq!(s.len(), 44);
        assert_eq!(&s[12..], &k.public().0);
    }
}
