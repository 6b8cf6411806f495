//! The database URL and TLS: `sslmode` is parsed here, not by
//! tokio-postgres (0.7.18 refuses `verify-ca` and `verify-full`), and each
//! mode becomes a rustls verifier (docs/notes/postgres.md, section 3):
//!
//! | sslmode | TLS | certificate |
//! |---|---|---|
//! | `disable` | never | - |
//! | `prefer` (default, as libpq) | if the server offers it | not checked |
//! | `require` | always | not checked (handshake signatures are); with `sslrootcert`, as `verify-ca` |
//! | `verify-ca` | always | chain to `sslrootcert` (or `system`) |
//! | `verify-full` | always | chain and host name |

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// Why a database URL cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("the store URL is not a URL: {0}")]
    Syntax(#[from] url::ParseError),
    #[error("the store URL must start with postgres:// or postgresql://")]
    Scheme,
    #[error("sslmode={0}: expected disable, prefer, require, verify-ca or verify-full")]
    SslMode(String),
    #[error("sslmode={0} needs sslrootcert (a PEM file, or `system`)")]
    NoRoots(&'static str),
    #[error("the store URL: {0}")]
    Config(#[source] tokio_postgres::Error),
    #[error("{what} {path}: {message}")]
    File {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// `sslmode`, as libpq spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// A parsed store URL: tokio-postgres' config and the TLS connector its
/// sslmode calls for.
#[derive(Clone)]
pub struct Target {
    /// Host, port, database, user, password, timeouts.
    pub config: tokio_postgres::Config,
    /// Used unless the mode is `disable`.
    pub tls: MakeRustlsConnect,
    /// The mode in effect.
    pub mode: Mode,
    /// `postgres://user@host:port/db`: the URL without its password, for
    /// messages.
    pub shown: String,
}

impl Target {
    /// Parses `url`; `password`, when given, replaces the URL's.
    pub fn parse(url: &str, password: Option<&str>) -> Result<Target, UrlError> {
        let mut parsed = url::Url::parse(url)?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(UrlError::Scheme);
        }
        let (mut mode, mut rootcert, mut cert, mut key) = (None, None, None, None);
        let kept: Vec<(String, String)> = parsed
            .query_pairs()
            .filter_map(|(k, v)| {
                match &*k {
                    "sslmode" => mode = Some(v.into_owned()),
                    "sslrootcert" => rootcert = Some(v.into_owned()),
                    "sslcert" => cert = Some(v.into_owned()),
                    "sslkey" => key = Some(v.into_owned()),
                    _ => return Some((k.into_owned(), v.into_owned())),
                }
                None
            })
            .collect();
        if kept.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(kept);
        }
        let mode = match mode.as_deref() {
            None | Some("prefer") => Mode::Prefer,
            Some("disable") => Mode::Disable,
            Some("require") if rootcert.is_some() => Mode::VerifyCa,
            Some("require") => Mode::Require,
            Some("verify-ca") => Mode::VerifyCa,
            Some("verify-full") => Mode::VerifyFull,
            Some(other) => return Err(UrlError::SslMode(other.to_string())),
        };
        let mut config: tokio_postgres::Config =
            parsed.as_str().parse().map_err(UrlError::Config)?;
        if let Some(pw) = password {
            config.password(pw);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(5));
        }
        config.application_name("ztbridge");
        config.ssl_mode(match mode {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            _ => SslMode::Require,
        });
        let tls = MakeRustlsConnect::new(client_config(mode, rootcert.as_deref(), cert, key)?);
        let mut shown = parsed.clone();
        let _ = shown.set_password(None);
        shown.set_query(None);
        Ok(Target {
            config,
            tls,
            mode,
            shown: shown.to_string(),
        })
    }

    /// One connection, driven by a task of the current runtime.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) = self.config.connect(self.tls.clone()).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }
}

fn client_config(
    mode: Mode,
    rootcert: Option<&str>,
    cert: Option<String>,
    key: Option<String>,
) -> Result<ClientConfig, UrlError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let roots = || -> Result<Arc<RootCertStore>, UrlError> {
        let name = match mode {
            Mode::VerifyFull => "verify-full",
            _ => "verify-ca",
        };
        let mut roots = RootCertStore::empty();
        match rootcert {
            None => return Err(UrlError::NoRoots(name)),
            Some("system") => {
                for c in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(c);
                }
            }
            Some(path) => {
                let file = |message: String| UrlError::File {
                    what: "sslrootcert",
                    path: path.into(),
                    message,
                };
                for c in CertificateDer::pem_file_iter(path).map_err(|e| file(e.to_string()))? {
                    roots
                        .add(c.map_err(|e| file(e.to_string()))?)
                        .map_err(|e| file(e.to_string()))?;
                }
            }
        }
        Ok(Arc::new(roots))
    };
    let builder = match mode {
        Mode::Disable | Mode::Prefer | Mode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider))),
        Mode::VerifyCa => {
            let inner = WebPkiServerVerifier::builder_with_provider(roots()?, provider)
                .build()
                .map_err(|e| UrlError::Tls(Error::General(e.to_string())))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(VerifyCa(inner)))
        }
        Mode::VerifyFull => builder.with_root_certificates(roots()?),
    };
    Ok(match (cert, key) {
        (Some(cert), Some(key)) => {
            let file = |what: &'static str, path: &str, message: String| UrlError::File {
                what,
                path: path.into(),
                message,
            };
            let chain = CertificateDer::pem_file_iter(&cert)
                .map_err(|e| file("sslcert", &cert, e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| file("sslcert", &cert, e.to_string()))?;
            let key_der = PrivateKeyDer::from_pem_file(&key)
                .map_err(|e| file("sslkey", &key, e.to_string()))?;
            builder.with_client_auth_cert(chain, key_der)?
        }
        _ => builder.with_no_client_auth(),
    })
}

/// `prefer` and `require`: encrypted, the certificate not checked, but the
/// handshake's signatures are (the peer holds the key it shows).
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the name may
/// differ (webpki checks the chain first, so a name error means the chain
/// passed).
#[derive(Debug)]
struct VerifyCa(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for VerifyCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmodes_are_ours_and_the_password_is_never_shown() {
        let t = Target::parse(
            "postgres://zt:secret@db.example:5433/zt?sslmode=require&application_name=x",
            None,
        )
        .unwrap();
        assert_eq!(t.mode, Mode::Require);
        assert_eq!(t.shown, "postgres://zt@db.example:5433/zt");
        assert_eq!(t.config.get_password(), Some(&b"secret"[..]));
        let t = Target::parse("postgres://zt@h/zt", Some("other")).unwrap();
        assert_eq!(t.mode, Mode::Prefer);
        assert_eq!(t.config.get_password(), Some(&b"other"[..]));
        assert!(matches!(
            Target::parse("postgres://zt@h/zt?sslmode=verify-full", None),
            Err(UrlError::NoRoots("verify-full"))
        ));
        assert!(matches!(
            Target::parse("postgres://zt@h/zt?sslmode=allow-ish", None),
            Err(UrlError::SslMode(_))
        ));
        assert!(matches!(
            Target::parse("mysql://zt@h/zt", None),
            Err(UrlError::Scheme)
        ));
    }
}
