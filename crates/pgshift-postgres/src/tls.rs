//! TLS for both kinds of connection, following libpq's `sslmode`: `disable`,
//! `prefer` (the default: TLS when the server offers it), `require` (TLS, certificate
//! not checked, as libpq does without a root certificate), `verify-ca` and
//! `verify-full` (certificate checked against `sslrootcert`, or the Mozilla roots
//! compiled into pgshift; host name checked too).

use std::collections::BTreeMap;
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

/// Takes `keys` out of a URL or `key=value` string (settings the connection library
/// does not know: TLS verify modes, root files, services, password files) and
/// returns the rest with their values.
pub fn take_options(conn: &str, keys: &[&str]) -> (String, BTreeMap<String, String>) {
    let mut taken = BTreeMap::new();
    let mut take = |key: &str, value: &str| -> bool {
        if keys.contains(&key) {
            taken.insert(key.to_string(), value.to_string());
            return true;
        }
        false
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
    (rest, taken)
}

/// The mode for libpq's `sslmode` and `sslrootcert` settings.
pub fn tls_mode(sslmode: Option<&str>, root: Option<PathBuf>) -> Result<TlsMode, String> {
    Ok(match sslmode {
        None | Some("prefer") | Some("allow") => TlsMode::Prefer,
        Some("disable") => TlsMode::Disable,
        Some("require") if root.is_none() => TlsMode::Require,
        Some("require" | "verify-ca" | "verify-full") => TlsMode::Verify { root },
        Some(other) => return Err(format!("unknown sslmode {other:?}: use disable, prefer, require, verify-ca or verify-full")),
    })
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
        let keys = ["sslmode", "sslrootcert"];
        let (rest, taken) = take_options("postgresql://u:p@h/db?sslmode=verify-full&sslrootcert=/ca.pem&connect_timeout=3", &keys);
        assert_eq!(rest, "postgresql://u:p@h/db?connect_timeout=3");
        let mode = tls_mode(taken.get("sslmode").map(String::as_str), taken.get("sslrootcert").map(Into::into)).unwrap();
        assert_eq!(mode, TlsMode::Verify { root: Some("/ca.pem".into()) });
        let (rest, taken) = take_options("host=h user=u sslmode=require", &keys);
        assert_eq!((rest.as_str(), taken.get("sslmode").map(String::as_str)), ("host=h user=u", Some("require")));
        assert_eq!(tls_mode(Some("require"), None).unwrap(), TlsMode::Require);
        assert_eq!(tls_mode(None, None).unwrap(), TlsMode::Prefer);
        assert!(tls_mode(Some("maybe"), None).unwrap_err().contains("maybe"));
    }
}
