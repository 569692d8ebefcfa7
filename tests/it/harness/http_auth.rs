//! For the gateway's `--http-auth` and TLS: key files, requests signed by botocore
//! (`tests/it/py/sigv4_sign.py`), boto3 runs, and a certificate of the test's own.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// A key of an `--http-auth` file.
pub struct HttpKey {
    pub id: &'static str,
    pub secret: &'static str,
    /// Function names, or `"*"`.
    pub functions: &'static [&'static str],
}

/// Writes an `--http-auth` file holding `keys` into `dir`.
pub fn http_auth_file(dir: &Path, keys: &[HttpKey]) -> PathBuf {
    let keys: Vec<Value> = keys
        .iter()
        .map(|k| json!({"access_key_id": k.id, "secret_access_key": k.secret, "functions": k.functions}))
        .collect();
    let path = dir.join("http-auth.json");
    std::fs::write(&path, json!({ "keys": keys }).to_string()).expect("write the --http-auth file");
    path
}

/// Runs `tests/it/py/<script>` with python3 and no AWS configuration of the user's; it
/// must succeed and print JSON.
pub async fn python_json(script: &str, args: &[&str]) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/py")
        .join(script);
    let output = tokio::process::Command::new("python3")
        .arg(&path)
        .args(args)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .await
        .expect("run python3");
    assert!(
        output.status.success(),
        "{script} failed (scripts/test installs boto3):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{script} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// The headers botocore's SigV4 signer (service `lambda`) adds to `method url body`
/// for the key `id`/`secret`, its clock at `at` (`yyyyMMddTHHmmssZ`) or now.
pub async fn sigv4_headers(
    method: &str,
    url: &str,
    body: &str,
    id: &str,
    secret: &str,
    at: Option<&str>,
) -> Vec<(String, String)> {
    let mut args = vec![method, url, body, id, secret];
    args.extend(at);
    let headers = python_json("sigv4_sign.py", &args).await;
    headers
        .as_object()
        .expect("a JSON object of headers")
        .iter()
        .map(|(name, value)| (name.clone(), value.as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// `time` as SigV4 writes it (`20150830T123600Z`).
pub fn amz_date(time: std::time::SystemTime) -> String {
    let secs = time
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let t = time::OffsetDateTime::from_unix_timestamp(secs as i64).expect("a valid time");
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A self-signed certificate for `127.0.0.1` and `localhost`, written into `dir`:
/// (certificate file, key file, certificate PEM).
pub fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf, String) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("a self-signed certificate");
    let cert_pem = certified.cert.pem();
    let (cert, key) = (dir.join("gateway.crt"), dir.join("gateway.key"));
    std::fs::write(&cert, &cert_pem).expect("write the certificate");
    std::fs::write(&key, certified.key_pair.serialize_pem()).expect("write the key");
    (cert, key, cert_pem)
}
