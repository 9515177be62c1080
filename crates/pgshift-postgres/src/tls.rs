//! TLS for both kinds of connection, following libpq's `sslmode`: `disable`,
//! `prefer` (the default: TLS when the server offers it), `require` (TLS, certificate
//! not checked, as libpq does without a root certificate), `verify-ca` and
//! `verify-full` (certificate checked against `sslrootcert`, or the Mozilla roots
//! compiled into pgshift; host name checked too).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    Prefer,
    Require,
    /// Certificate checked; `root` is the `sslrootcert` file.
    Verify { root: Option<PathBuf> },
}

impl TlsMode {
    /// Whether a connection must fail rather than go on in plain text.
    pub fn required(&self) -> bool {
        matches!(self, TlsMode::Require | TlsMode::Verify { .. })
    }
}

/// Takes `sslmode` and `sslrootcert` out of a URL or `key=value` string (the
/// connection library knows neither the verify modes nor root files) and returns the
/// rest with the mode.
pub fn split_tls_options(conn: &str) -> Result<(String, TlsMode), String> {
    let mut mode = None;
    let mut root = None;
    let mut take = |key: &str, value: &str| -> bool {
        match key {
            "sslmode" => mode = Some(value.to_string()),
            "sslrootcert" => root = Some(PathBuf::from(value)),
            _ => return false,
        }
        true
    };
    let rest = if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        match conn.split_once('?') {
            Some((base, query)) => {
                let kept: Vec<&str> = query.split('&').filter(|kv| kv.split_once('=').is_none_or(|(k, v)| !take(k, v))).collect();
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
            None => conn.to_string(),
        }
    } else {
        let kept: Vec<&str> = conn.split_whitespace().filter(|kv| kv.split_once('=').is_none_or(|(k, v)| !take(k, v))).collect();
        kept.join(" ")
    };
    let mode = match mode.as_deref() {
        None | Some("prefer") | Some("allow") => TlsMode::Prefer,
        Some("disable") => TlsMode::Disable,
        Some("require") if root.is_none() => TlsMode::Require,
        Some("require" | "verify-ca" | "verify-full") => TlsMode::Verify { root },
        Some(other) => return Err(format!("unknown sslmode {other:?}: use disable, prefer, require, verify-ca or verify-full")),
    };
    Ok((rest, mode))
}

/// The rustls configuration for a mode (None for `disable`).
pub fn client_config(mode: &TlsMode) -> Result<Option<ClientConfig>, String> {
    let provider = Arc::new(ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = match mode {
        TlsMode::Disable => return Ok(None),
        TlsMode::Prefer | TlsMode::Require => {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCertificate(provider))).with_no_client_auth()
        }
        TlsMode::Verify { root } => {
            let mut roots = RootCertStore::empty();
            match root {
                Some(path) => {
                    let certs = CertificateDer::pem_file_iter(path)
                        .map_err(|e| format!("cannot read sslrootcert {}: {e}", path.display()))?;
                    for cert in certs {
                        let cert = cert.map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                        roots.add(cert).map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Some(config))
}

pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string()).map_err(|_| format!("{host:?} is not a valid TLS server name"))
}

/// `sslmode=require`: encrypted, server not authenticated (libpq's behaviour).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_options_are_taken_out_of_urls_and_keyword_strings() {
        let (rest, mode) = split_tls_options("postgresql://u:p@h/db?sslmode=verify-full&sslrootcert=/ca.pem&connect_timeout=3").unwrap();
        assert_eq!(rest, "postgresql://u:p@h/db?connect_timeout=3");
        assert_eq!(mode, TlsMode::Verify { root: Some("/ca.pem".into()) });
        let (rest, mode) = split_tls_options("host=h user=u sslmode=require").unwrap();
        assert_eq!((rest.as_str(), mode), ("host=h user=u", TlsMode::Require));
        assert_eq!(split_tls_options("postgresql://h/db").unwrap().1, TlsMode::Prefer);
        assert!(split_tls_options("postgresql://h/db?sslmode=maybe").unwrap_err().contains("maybe"));
    }
}
