//! TLS on every listener, with real clients: the opentelemetry-otlp exporter (gRPC and HTTP),
//! curl, a tonic client (Jaeger remote storage), and the CLI's `--url`. Certificates come from
//! a test CA made per test with rcgen.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use api::ServerConfig;
use api::jaeger::proto;
use api::tls::TlsFiles;
use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig};
use opentelemetry_otlp::{
    Protocol, SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use proto::trace_reader_client::TraceReaderClient;
use serde_json::Value;
use tonic::transport::Channel;

use crate::binary::{BINARY, spawn_server_with};
use crate::exporters::{check_run, emit_agent_run};
use crate::support::TestServer;

/// A CA, and a server certificate it signed for `localhost` and 127.0.0.1, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    files: TlsFiles,
}

impl Pki {
    fn new() -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sightline test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let server_key = rcgen::KeyPair::generate().unwrap();
        let server_params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        let server_cert = server_params.signed_by(&server_key, &ca).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server.key"),
        };
        std::fs::write(&files.cert, server_cert.pem()).unwrap();
        std::fs::write(&files.key, server_key.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki {
            ca_pem: ca.pem(),
            dir,
            files,
        }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A reqwest client trusting only the test CA.
    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap()])
            .build()
            .unwrap()
    }

    fn tonic_tls(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .domain_name("localhost")
    }
}

async fn start_tls(dir: &Path, pki: &Pki) -> TestServer {
    let mut config = ServerConfig::ephemeral(dir);
    config.tls = Some(pki.files.clone());
    let mut server = TestServer::start_with(config).await;
    server.client = pki.client();
    server
}

/// Runs curl; returns its exit code and standard output.
fn curl(args: &[&OsStr]) -> (i32, String) {
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl is installed");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_otlp_exporter_sends_over_tls_on_grpc_and_http() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let server = start_tls(dir.path(), &pki).await;
    assert!(server.otlp_grpc.starts_with("https://"));

    let endpoint = server.otlp_grpc.clone();
    let tls = pki.tonic_tls();
    let grpc_trace = emit_agent_run(
        move || {
            SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_tls_config(tls)
                .build()
                .unwrap()
        },
        "grpc-tls-agent",
    )
    .await;
    check_run(&server, &grpc_trace, "grpc-tls-agent").await;

    let endpoint = format!("{}/v1/traces", server.otlp_http);
    let client = pki.client();
    let http_trace = emit_agent_run(
        move || {
            SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_http_client(client)
                .with_endpoint(endpoint)
                .build()
                .unwrap()
        },
        "http-tls-agent",
    )
    .await;
    check_run(&server, &http_trace, "http-tls-agent").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_and_tonic_clients_need_the_ca_and_plain_text_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let server = start_tls(dir.path(), &pki).await;
    let ca = pki.ca_file();

    // OTLP/HTTP JSON through curl, trusting the CA.
    let body = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"curl-tls"}}]},
        "scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
        "name":"invoke_agent curl","startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000001000000000"}]}]}]}"#;
    let otlp_url = format!(
        "{}/v1/traces",
        server.otlp_http.replace("127.0.0.1", "localhost")
    );
    let (code, out) = curl(&[
        OsStr::new("--cacert"),
        ca.as_os_str(),
        OsStr::new("-H"),
        OsStr::new("content-type: application/json"),
        OsStr::new("--data"),
        OsStr::new(body),
        OsStr::new("--write-out"),
        OsStr::new("%{http_code}"),
        OsStr::new(&otlp_url),
    ]);
    assert_eq!(code, 0, "curl over TLS: {out}");
    assert!(out.ends_with("200"), "{out}");

    // SQL through curl, on the IP address (the certificate names it too).
    let sql_url = format!("{}/api/v1/sql", server.api);
    let query = r#"{"sql":"SELECT service_name, span_name FROM spans WHERE trace_id = '5b8efff798038103d269b633813fc60c'"}"#;
    let (code, out) = curl(&[
        OsStr::new("--cacert"),
        ca.as_os_str(),
        OsStr::new("-H"),
        OsStr::new("content-type: application/json"),
        OsStr::new("--data"),
        OsStr::new(query),
        OsStr::new(&sql_url),
    ]);
    assert_eq!(code, 0, "{out}");
    let answer: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        answer["rows"],
        serde_json::json!([["curl-tls", "invoke_agent curl"]])
    );

    // Without the CA, curl refuses the certificate (exit 60: peer certificate not verified).
    let (code, _) = curl(&[
        OsStr::new(&sql_url),
        OsStr::new("--data"),
        OsStr::new(query),
    ]);
    assert_eq!(code, 60, "curl must not trust an unknown CA");
    // Plain HTTP to a TLS port gets no answer.
    let plain = sql_url.replace("https://", "http://");
    let (code, out) = curl(&[OsStr::new(&plain), OsStr::new("--data"), OsStr::new(query)]);
    assert_ne!(code, 0, "plain HTTP must not be served: {out}");

    // A tonic client (Jaeger remote storage) over TLS sees the service.
    let channel = Channel::from_shared(server.jaeger.clone())
        .unwrap()
        .tls_config(pki.tonic_tls())
        .unwrap()
        .connect()
        .await
        .expect("tonic connects over TLS");
    let services = TraceReaderClient::new(channel)
        .get_services(proto::GetServicesRequest {})
        .await
        .unwrap()
        .into_inner()
        .services;
    assert_eq!(services, vec!["curl-tls".to_owned()]);
    // A plain-text gRPC client cannot talk to it.
    let plain = server.jaeger.replace("https://", "http://");
    let plain_call = async {
        let mut client = TraceReaderClient::connect(plain).await?;
        client
            .get_services(proto::GetServicesRequest {})
            .await
            .map_err(|status| Box::new(status) as Box<dyn std::error::Error + Send + Sync>)?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    };
    assert!(plain_call.await.is_err(), "plain-text gRPC must fail");
    // The OTLP/gRPC listener is TLS too: a client without the CA fails the handshake.
    let untrusted = Channel::from_shared(server.otlp_grpc.clone())
        .unwrap()
        .tls_config(ClientTlsConfig::new().domain_name("localhost"))
        .unwrap()
        .connect()
        .await;
    assert!(untrusted.is_err(), "a client without the CA must fail");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_that_never_start_tls_do_not_queue_real_clients() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let server = start_tls(dir.path(), &pki).await;
    let addr = server.api.trim_start_matches("https://").to_owned();
    let mut idle = Vec::new();
    for _ in 0..400 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // The handshake timeout is 10 s: a client queued behind the idle ones would time out.
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap()])
        .timeout(std::time::Duration::from_secs(8))
        .build()
        .unwrap();
    let health = client
        .get(format!("{}/healthz", server.api))
        .send()
        .await
        .expect("served despite 400 idle connections");
    assert_eq!(health.status(), reqwest::StatusCode::OK);
    drop(idle);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_tls_together_allow_listening_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let mut config = ServerConfig::ephemeral(dir.path());
    config.api_addr = "0.0.0.0:0".parse().unwrap();
    config.tls = Some(pki.files.clone());
    let error = api::start(config.clone()).await.unwrap_err().to_string();
    assert!(
        error.contains("API tokens") && !error.contains("TLS"),
        "{error}"
    );
    config.tokens = std::sync::Arc::new(
        api::auth::Tokens::from_sections(&[api::auth::TokenSection {
            name: "operator".into(),
            sha256: api::auth::token_hash("tok"),
            scopes: vec![api::auth::Scope::Query],
        }])
        .unwrap(),
    );
    let mut server = TestServer::start_with(config).await;
    server.client = pki.client();
    let port = server.api.rsplit(':').next().unwrap().to_owned();
    let response = pki
        .client()
        .post(format!("https://localhost:{port}/api/v1/sql"))
        .bearer_auth("tok")
        .json(&serde_json::json!({ "sql": "SELECT count(*) AS n FROM spans" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_certificate_files_are_named_before_the_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let other = Pki::new();
    let refusal = |cert: PathBuf, key: PathBuf| {
        let mut config = ServerConfig::ephemeral(dir.path());
        config.tls = Some(TlsFiles { cert, key });
        async move { format!("{:#}", api::start(config).await.unwrap_err()) }
    };
    let error = refusal(pki.dir.path().join("missing.pem"), pki.files.key.clone()).await;
    assert!(
        error.contains("missing.pem") && error.contains("certificate"),
        "{error}"
    );
    // A key file holding a certificate, not a key.
    let error = refusal(pki.files.cert.clone(), pki.files.cert.clone()).await;
    assert!(
        error.contains("private key") && error.contains("server.pem"),
        "{error}"
    );
    // Another certificate's key.
    let error = refusal(pki.files.cert.clone(), other.files.key.clone()).await;
    assert!(error.contains("do not make a usable pair"), "{error}");
    assert!(
        !dir.path().join("sightline.redb").exists(),
        "refused before the store was opened"
    );
}

#[test]
fn the_cli_reaches_a_tls_server_with_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let server = spawn_server_with(
        dir.path(),
        &[
            OsStr::new("--tls-cert"),
            pki.files.cert.as_os_str(),
            OsStr::new("--tls-key"),
            pki.files.key.as_os_str(),
        ],
    );
    let url = server.api.replace("http://", "https://");
    let sql = |ca: Option<&Path>| {
        let mut command = Command::new(BINARY);
        command
            .args(["sql", "--format", "csv", "--url", &url])
            .arg("SELECT count(*) AS n FROM spans");
        match ca {
            Some(ca) => command.env("SIGHTLINE_CA_CERT", ca),
            None => command.env_remove("SIGHTLINE_CA_CERT"),
        };
        command.output().expect("run sightline sql")
    };
    let trusted = sql(Some(&pki.ca_file()));
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&trusted.stdout), "n\n0\n");
    // Plain HTTP to the TLS port: the error says to use https.
    let plain = Command::new(BINARY)
        .args(["sql", "--url", &server.api, "SELECT 1"])
        .output()
        .unwrap();
    assert!(!plain.status.success());
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(stderr.contains("use https://"), "{stderr}");
    let untrusted = sql(None);
    assert!(!untrusted.status.success());
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(stderr.contains("certificate"), "{stderr}");

    // The data directory names the running server with its https address.
    let recorded = std::fs::read_to_string(dir.path().join("api.addr")).unwrap();
    assert_eq!(recorded.trim(), url);
}
