//! The crypto provider sessions use: str0m's aws-lc-rs provider with a DTLS
//! factory that shares one dimpl `Config` between all sessions.
//!
//! str0m's own factory builds a fresh `dimpl::Config` for every session, and
//! building one validates the crypto provider: a key exchange round trip in
//! each of X25519, P-256 and P-384 plus hash, PRF, HMAC and AEAD test vectors.
//! That is tens of elliptic-curve scalar multiplications per session, done on
//! the thread that negotiates it, and it bounded the session setup rate. The
//! config holds no per-connection state (dimpl takes it as `Arc<Config>`), so
//! one per MTU is built, validated once, and shared. Its key provider
//! (`dtls_key`) also parses the certificate's private key once for all.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion,
};
use str0m::crypto::{CryptoError, CryptoProvider};

use crate::dtls_key::SharedKeys;
use crate::srtp::Exported;

/// str0m's provider for this build's crypto features, with shared DTLS configs.
pub fn crypto_provider() -> CryptoProvider {
    let mut p = str0m::crypto::from_feature_flags();
    p.dtls_provider = shared_dtls();
    p
}

/// The process's DTLS factory.
fn shared_dtls() -> &'static SharedConfigDtls {
    static DTLS: OnceLock<SharedConfigDtls> = OnceLock::new();
    DTLS.get_or_init(|| SharedConfigDtls {
        inner: str0m::crypto::from_feature_flags().dtls_provider,
        configs: Mutex::new(HashMap::new()),
    })
}

/// Makes dimpl DTLS endpoints from a config built once per MTU.
pub struct SharedConfigDtls {
    /// str0m's factory, for certificate generation.
    inner: &'static dyn DtlsProvider,
    configs: Mutex<HashMap<Option<usize>, Arc<dimpl::Config>>>,
}

impl std::fmt::Debug for SharedConfigDtls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedConfigDtls").finish_non_exhaustive()
    }
}

impl SharedConfigDtls {
    fn config(&self, mtu: Option<usize>) -> Result<Arc<dimpl::Config>, CryptoError> {
        let mut configs = self.configs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = configs.get(&mtu) {
            return Ok(c.clone());
        }
        // As str0m configures it: ICE has checked the return route before
        // DTLS starts, so server cookies add a round trip and nothing else.
        // One parsed signing key for all endpoints (`dtls_key`).
        static KEYS: SharedKeys = SharedKeys::new();
        let mut provider = dimpl::crypto::aws_lc_rs::default_provider();
        provider.key_provider = &KEYS;
        let mut b = dimpl::Config::builder()
            .use_server_cookie(false)
            .with_crypto_provider(provider);
        if let Some(mtu) = mtu {
            b = b.mtu(mtu);
        }
        let config = Arc::new(
            b.build()
                .map_err(|e| CryptoError::Other(format!("DTLS config: {e}")))?,
        );
        configs.insert(mtu, config.clone());
        Ok(config)
    }
}

impl DtlsProvider for SharedConfigDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        self.inner.generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let config = self.config(mtu)?;
        let cert = cert.clone();
        let dtls = match version {
            DtlsVersion::Dtls12 => dimpl::Dtls::new_12(config, cert, now),
            DtlsVersion::Dtls13 => dimpl::Dtls::new_13(config, cert, now),
            DtlsVersion::Auto => dimpl::Dtls::new_auto(config, cert, now),
            v => return Err(CryptoError::Other(format!("unsupported DTLS version {v}"))),
        };
        Ok(Box::new(Endpoint(dtls)))
    }
}

thread_local! {
    /// The keying material the last endpoint polled on this thread exported.
    static EXPORTED: RefCell<Option<Exported>> = const { RefCell::new(None) };
}

/// Take the SRTP keying material a DTLS endpoint exported on this thread
/// since the last call. A shard clears this before it hands a datagram to a
/// session and takes it right after, so what it takes is that session's:
/// str0m polls the endpoint only from inside calls on its `Rtc`.
pub fn take_exported() -> Option<Exported> {
    EXPORTED.with(|x| x.borrow_mut().take())
}

/// One session's DTLS endpoint.
struct Endpoint(dimpl::Dtls);

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").finish_non_exhaustive()
    }
}

impl DtlsInstance for Endpoint {
    fn set_active(&mut self, active: bool) {
        self.0.set_active(active);
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.0.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        let out = self.0.poll_output(buf);
        if let DtlsOutput::KeyingMaterial(material, profile) = &out {
            let e = Exported {
                material: material.to_vec(),
                profile: *profile,
                active: self.0.is_active(),
            };
            EXPORTED.with(|x| *x.borrow_mut() = Some(e));
        }
        out
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.0.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.0.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.0.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.0.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.0.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.0.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_share_one_validated_config_per_mtu() {
        let p = crypto_provider();
        let cert = p.dtls_provider.generate_certificate().expect("certificate");
        let now = Instant::now();
        let a = p
            .dtls_provider
            .new_dtls(&cert, now, DtlsVersion::Dtls12, Some(1150))
            .unwrap();
        let b = p
            .dtls_provider
            .new_dtls(&cert, now, DtlsVersion::Auto, Some(1150))
            .unwrap();
        let shared = shared_dtls().config(Some(1150)).unwrap();
        // The table's copy, both endpoints' and this one.
        assert!(
            Arc::strong_count(&shared) >= 4,
            "{}",
            Arc::strong_count(&shared)
        );
        drop((a, b));
        assert!(!Arc::ptr_eq(
            &shared,
            &shared_dtls().config(Some(1200)).unwrap()
        ));
    }
}
