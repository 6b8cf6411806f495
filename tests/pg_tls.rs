//! TLS to PostgreSQL with rustls, `sslmode` by `sslmode` as the store reads
//! it from its URL (runtime/src/store/postgres/tls.rs), against a real
//! server whose certificate names `localhost` only and is signed by a test
//! CA.

mod common;

use std::path::Path;
use std::process::Command;

use common::pg::PgServer;

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
    // SCRAM with channel binding (tls-server-end-point) over require; without
    // TLS, channel_binding=require cannot be met.
    assert_eq!(
        ssl(q(&by_ip, "sslmode=require&channel_binding=require".into())).await,
        Ok(true)
    );
    assert!(
        ssl(q(&by_ip, "sslmode=disable&channel_binding=require".into()))
            .await
            .is_err()
    );
}
