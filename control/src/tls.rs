//! TLS material for the HTTPS listener: the operator's PEM files, or a
//! self-signed certificate made at start.

use std::path::Path;

use ring::digest;

/// PEM certificate chain and key, plus the leaf's SHA-256 fingerprint.
pub struct TlsMaterial {
    /// Certificate chain, PEM.
    pub cert_pem: String,
    /// Private key, PEM.
    pub key_pem: String,
    /// SHA-256 fingerprint of the leaf certificate.
    pub fingerprint: String,
    /// Whether the certificate was generated at start.
    pub self_signed: bool,
}

/// Load `cert`/`key`, or make a self-signed certificate for localhost.
pub fn load_or_generate(cert: Option<&Path>, key: Option<&Path>) -> anyhow::Result<TlsMaterial> {
    match (cert, key) {
        (Some(c), Some(k)) => {
            let cert_pem = std::fs::read_to_string(c)
                .map_err(|e| anyhow::anyhow!("reading --cert {}: {e}", c.display()))?;
            let key_pem = std::fs::read_to_string(k)
                .map_err(|e| anyhow::anyhow!("reading --key {}: {e}", k.display()))?;
            let der = first_pem_der(&cert_pem)
                .ok_or_else(|| anyhow::anyhow!("--cert {}: no PEM certificate", c.display()))?;
            Ok(TlsMaterial {
                fingerprint: fingerprint(&der),
                cert_pem,
                key_pem,
                self_signed: false,
            })
        }
        _ => {
            let names = vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
                "::1".to_string(),
            ];
            let ck = rcgen::generate_simple_self_signed(names)?;
            Ok(TlsMaterial {
                fingerprint: fingerprint(ck.cert.der()),
                cert_pem: ck.cert.pem(),
                key_pem: ck.signing_key.serialize_pem(),
                self_signed: true,
            })
        }
    }
}

fn first_pem_der(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let start = pem.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
    let end = pem[start..].find("-----END CERTIFICATE-----")? + start;
    let b64: String = pem[start..end].split_whitespace().collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// `AB:CD:…` SHA-256 of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    let d = digest::digest(&digest::SHA256, der);
    d.as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}
