//! TLS to PostgreSQL with rustls, `sslmode` by `sslmode` (the design of
//! docs/notes/postgres.md, section 3), against a real server whose
//! certificate names `localhost` only and is signed by a test CA.
//!
//! tokio-postgres 0.7 knows disable/prefer/require only; verify-ca and
//! verify-full are rustls verifiers under `SslMode::Require`.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::pg::PgServer;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

#[derive(Clone, Copy, Debug)]
enum Mode {
    Require,
    VerifyCa,
    VerifyFull,
}

/// `require`: encrypted, the certificate not checked, but the handshake's
/// signatures are (the peer holds the key of the certificate it shows).
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

/// `verify-ca`: the chain must lead to a trusted root; the name may differ.
/// (webpki checks the chain first, so a name error means the chain passed.)
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

fn client_config(mode: Mode, root_pem: &Path) -> ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions");
    let roots = || {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(root_pem).expect("sslrootcert") {
            roots.add(cert.expect("PEM")).expect("root");
        }
        Arc::new(roots)
    };
    match mode {
        Mode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth(),
        Mode::VerifyCa => {
            let inner = WebPkiServerVerifier::builder_with_provider(roots(), provider)
                .build()
                .expect("verifier");
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(VerifyCa(inner)))
                .with_no_client_auth()
        }
        Mode::VerifyFull => builder
            .with_root_certificates(roots())
            .with_no_client_auth(),
    }
}

/// Connects `url` (no sslmode in it) with TLS required and `mode`'s
/// verifier; true when the session is encrypted.
async fn connect(url: &str, mode: Mode, root_pem: &Path) -> Result<bool, String> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| format!("{e}"))?;
    config.ssl_mode(SslMode::Require);
    let tls = MakeRustlsConnect::new(client_config(mode, root_pem));
    let (client, conn) = config.connect(tls).await.map_err(|e| format!("{e:?}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(row.get(0))
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for DNS `localhost` only (no IP address)
/// signed by it, and a second, unrelated CA.
fn make_certs(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for ca in ["ca", "other-ca"] {
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        let (key, crt, subj) = (
            format!("{ca}.key"),
            format!("{ca}.crt"),
            format!("/CN=ztbridge test {ca}"),
        );
        args.extend(["-keyout", &key, "-out", &crt, "-days", "2", "-subj", &subj]);
        args.extend([
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(dir, &args);
    }
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &args);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmodes_verify_what_they_promise() {
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let pg = PgServer::new_async().await;
    let (cert, key) = (
        std::fs::read(certs.path().join("server.crt")).unwrap(),
        std::fs::read(certs.path().join("server.key")).unwrap(),
    );
    pg.blocking(move |p| p.enable_tls(&cert, &key)).await;
    let ca = certs.path().join("ca.crt");
    let other = certs.path().join("other-ca.crt");

    // tokio-postgres itself does not know the verifying modes.
    let err = pg
        .url()
        .replace("/ztbridge", "/ztbridge?sslmode=verify-full")
        .parse::<tokio_postgres::Config>()
        .unwrap_err();
    assert!(format!("{err:?}").contains("sslmode"), "{err:?}");

    // By IP address: the certificate names localhost only.
    let by_ip = pg.url();
    // By name: TLS checks "localhost", TCP goes to 127.0.0.1 (hostaddr).
    let by_name = format!(
        "{}?hostaddr=127.0.0.1",
        pg.url().replace("@127.0.0.1:", "@localhost:")
    );

    assert_eq!(connect(&by_name, Mode::VerifyFull, &ca).await, Ok(true));
    let err = connect(&by_ip, Mode::VerifyFull, &ca).await.unwrap_err();
    assert!(err.contains("NotValidForName"), "verify-full by IP: {err}");
    let err = connect(&by_name, Mode::VerifyFull, &other)
        .await
        .unwrap_err();
    assert!(
        err.contains("UnknownIssuer"),
        "verify-full, other CA: {err}"
    );

    assert_eq!(connect(&by_ip, Mode::VerifyCa, &ca).await, Ok(true));
    let err = connect(&by_ip, Mode::VerifyCa, &other).await.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "verify-ca, other CA: {err}");

    assert_eq!(connect(&by_ip, Mode::Require, &other).await, Ok(true));

    // SCRAM with channel binding (tls-server-end-point) over require.
    let bound = format!("{by_ip}?channel_binding=require");
    assert_eq!(connect(&bound, Mode::Require, &other).await, Ok(true));
    // Without TLS, channel_binding=require cannot be met.
    let plain =
        common::pg::connect(&format!("{by_ip}?channel_binding=require&sslmode=disable")).await;
    assert!(plain.is_err(), "channel binding without TLS accepted");
}

/// The store's own URL parsing (runtime/src/store/postgres/tls.rs): each
/// sslmode in the URL, as an operator writes it, against the same server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stores_sslmodes_from_the_url() {
    use ztbridge_runtime::store::postgres::Target;
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let pg = PgServer::new_async().await;
    let (cert, key) = (
        std::fs::read(certs.path().join("server.crt")).unwrap(),
        std::fs::read(certs.path().join("server.key")).unwrap(),
    );
    pg.blocking(move |p| p.enable_tls(&cert, &key)).await;
    let ca = certs.path().join("ca.crt").display().to_string();
    let other = certs.path().join("other-ca.crt").display().to_string();
    let by_ip = pg.url();
    let by_name = pg.url().replace("@127.0.0.1:", "@localhost:");
    let ssl = |url: String| async move {
        let target = Target::parse(&url, None).map_err(|e| e.to_string())?;
        let client = target.connect().await.map_err(|e| format!("{e:?}"))?;
        let row = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .map_err(|e| format!("{e:?}"))?;
        Ok::<bool, String>(row.get(0))
    };
    let q = |base: &str, query: String| format!("{base}?{query}");
    assert_eq!(
        ssl(q(
            &by_name,
            format!("hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={ca}")
        ))
        .await,
        Ok(true)
    );
    let err = ssl(q(&by_ip, format!("sslmode=verify-full&sslrootcert={ca}")))
        .await
        .unwrap_err();
    assert!(err.contains("NotValidForName"), "{err}");
    let err = ssl(q(
        &by_name,
        format!("hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={other}"),
    ))
    .await
    .unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert_eq!(
        ssl(q(&by_ip, format!("sslmode=verify-ca&sslrootcert={ca}"))).await,
        Ok(true)
    );
    let err = ssl(q(&by_ip, format!("sslmode=verify-ca&sslrootcert={other}")))
        .await
        .unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    // require: encrypted, any certificate; with sslrootcert, as verify-ca.
    assert_eq!(ssl(q(&by_ip, "sslmode=require".into())).await, Ok(true));
    assert!(
        ssl(q(&by_ip, format!("sslmode=require&sslrootcert={other}")))
            .await
            .is_err()
    );
    // prefer (the default) takes TLS when offered; disable never does.
    assert_eq!(ssl(by_ip.clone()).await, Ok(true));
    assert_eq!(ssl(q(&by_ip, "sslmode=disable".into())).await, Ok(false));
    assert!(Target::parse(&q(&by_ip, "sslmode=verify-full".into()), None).is_err());
}
