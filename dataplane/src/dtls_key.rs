//! One parsed DTLS signing key for every session.
//!
//! dimpl parses the private key of the certificate each endpoint is made
//! with: a PKCS#8 decode, an elliptic-curve point check and a key object on
//! the C heap, per session, although the server signs every handshake with
//! the same certificate. This key provider parses each distinct key once and
//! hands every endpoint a handle to it. The handle signs through `ring`,
//! whose key pairs sign from `&self`, so shards never wait on each other.
//!
//! Keys other than PKCS#8 ECDSA P-256 or P-384 (which is what sluice and
//! str0m generate) go to dimpl's own provider, unshared.

use std::sync::{Arc, Mutex};

use dimpl::crypto::{Buf, HashAlgorithm, KeyProvider, SignatureAlgorithm, SigningKey};
use dimpl::{CryptoError, CryptoOperation};
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, EcdsaSigningAlgorithm, ECDSA_P256_SHA256_ASN1_SIGNING,
    ECDSA_P384_SHA384_ASN1_SIGNING,
};

/// Distinct keys kept; past this a key is parsed per endpoint as before.
const MAX_KEYS: usize = 8;

/// The provider: every key it has parsed, by its DER bytes.
#[derive(Debug)]
pub struct SharedKeys {
    keys: Mutex<Vec<(Vec<u8>, Arc<Parsed>)>>,
}

impl SharedKeys {
    pub const fn new() -> Self {
        SharedKeys {
            keys: Mutex::new(Vec::new()),
        }
    }

    /// Keys parsed and kept so far.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Default for SharedKeys {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug)]
struct Parsed {
    pair: EcdsaKeyPair,
    hash: [HashAlgorithm; 1],
}

impl Parsed {
    fn of(der: &[u8]) -> Option<Parsed> {
        let algs: [(&'static EcdsaSigningAlgorithm, HashAlgorithm); 2] = [
            (&ECDSA_P256_SHA256_ASN1_SIGNING, HashAlgorithm::SHA256),
            (&ECDSA_P384_SHA384_ASN1_SIGNING, HashAlgorithm::SHA384),
        ];
        let rng = SystemRandom::new();
        algs.into_iter().find_map(|(alg, hash)| {
            let pair = EcdsaKeyPair::from_pkcs8(alg, der, &rng).ok()?;
            Some(Parsed { pair, hash: [hash] })
        })
    }
}

/// What an endpoint holds: a reference to the shared key.
#[derive(Debug)]
struct SharedKey(Arc<Parsed>);

impl SigningKey for SharedKey {
    fn sign(
        &mut self,
        data: &[u8],
        hash_alg: HashAlgorithm,
        out: &mut Buf,
    ) -> Result<(), CryptoError> {
        let key_hash = self.0.hash[0];
        if hash_alg != key_hash {
            return Err(CryptoError::SigningKeyHashMismatch {
                key_hash,
                requested: hash_alg,
            });
        }
        let signature = self
            .0
            .pair
            .sign(&SystemRandom::new(), data)
            .map_err(|_| CryptoError::OperationFailed(CryptoOperation::Sign))?;
        out.clear();
        out.extend_from_slice(signature.as_ref());
        Ok(())
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }

    fn hash_algorithm(&self) -> HashAlgorithm {
        self.0.hash[0]
    }

    fn supported_hash_algorithms(&self) -> &[HashAlgorithm] {
        &self.0.hash
    }
}

impl KeyProvider for SharedKeys {
    fn load_private_key(&self, key_der: &[u8]) -> Result<Box<dyn SigningKey>, CryptoError> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, k)) = keys.iter().find(|(der, _)| der.as_slice() == key_der) {
            return Ok(Box::new(SharedKey(k.clone())));
        }
        let Some(parsed) = Parsed::of(key_der) else {
            drop(keys);
            return dimpl::crypto::aws_lc_rs::default_provider()
                .key_provider
                .load_private_key(key_der);
        };
        let parsed = Arc::new(parsed);
        if keys.len() < MAX_KEYS {
            keys.push((key_der.to_vec(), parsed.clone()));
        }
        Ok(Box::new(SharedKey(parsed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1};

    fn p256_pkcs8() -> Vec<u8> {
        let rng = SystemRandom::new();
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .unwrap()
            .as_ref()
            .to_vec()
    }

    #[test]
    fn one_key_is_parsed_once_and_signs_verifiably_for_every_endpoint() {
        let keys = SharedKeys::new();
        let der = p256_pkcs8();
        let public = Parsed::of(&der)
            .unwrap()
            .pair
            .public_key()
            .as_ref()
            .to_vec();
        let mut a = keys.load_private_key(&der).unwrap();
        let mut b = keys.load_private_key(&der).unwrap();
        assert_eq!(keys.len(), 1);
        for k in [&mut a, &mut b] {
            assert_eq!(k.hash_algorithm(), HashAlgorithm::SHA256);
            assert_eq!(k.supported_hash_algorithms(), &[HashAlgorithm::SHA256]);
            let mut sig = Buf::new();
            k.sign(b"transcript", HashAlgorithm::SHA256, &mut sig)
                .unwrap();
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &public)
                .verify(b"transcript", &sig)
                .expect("a signature the peer can verify");
            let wrong = k.sign(b"transcript", HashAlgorithm::SHA384, &mut sig);
            assert!(matches!(
                wrong,
                Err(CryptoError::SigningKeyHashMismatch { .. })
            ));
        }
    }

    #[test]
    fn distinct_keys_are_kept_apart_and_the_table_is_bounded() {
        let keys = SharedKeys::new();
        for _ in 0..MAX_KEYS + 3 {
            keys.load_private_key(&p256_pkcs8()).unwrap();
        }
        assert_eq!(keys.len(), MAX_KEYS);
    }

    #[test]
    fn what_is_not_pkcs8_ecdsa_goes_to_dimpl_and_garbage_is_an_error() {
        let keys = SharedKeys::new();
        assert!(keys.load_private_key(b"not a key").is_err());
        assert_eq!(keys.len(), 0);
    }
}
