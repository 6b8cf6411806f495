//! Detached signatures of whole files with the transform signing keys: a
//! release signs its `SHA256SUMS` with them (`ztbridge keys sign`), and
//! anyone holding the `.pub` file checks it (`ztbridge keys verify`).
//!
//! # Format
//!
//! The signature is plain Ed25519 (RFC 8032) over the file's bytes exactly
//! as they are, nothing prepended, so OpenSSL 3 can check it too:
//! `openssl pkeyutl -verify -pubin -inkey KEY.pub -rawin -in FILE -sigfile
//! SIG.bin`.  The signature file (`FILE.sig`) is text, one `name: value`
//! per line after a first line that names the format:
//!
//! ```text
//! ztbridge-signature v1
//! file: SHA256SUMS
//! key-id: 5ef1c9a3b7d2e0f4a1c3e5b7
//! ed25519: <the 64-byte signature, base64>
//! ```
//!
//! `file` is informative (the name the file was signed under); `key-id` is
//! the signer's key ID (see [`super::signing`]), a hint only: the signature
//! is checked against every trusted key.  Unknown lines are refused, so a
//! later version of the format is not misread.

use wasmsign2::reexports::ct_codecs::{Base64, Decoder, Encoder};

use super::signing::{SecretKey, TrustedKeys};

/// First line of a signature file.
const MAGIC: &str = "ztbridge-signature v1";

/// A detached signature, as written to and read from `FILE.sig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetachedSignature {
    /// The file name it was made for (informative).
    pub file: String,
    /// The signer's key ID, hex (a hint; every trusted key is tried).
    pub key_id: String,
    /// The Ed25519 signature.
    signature: [u8; 64],
}

/// Why a signature file could not be read or did not verify.
#[derive(Debug, thiserror::Error)]
pub enum DetachedError {
    /// The signature file is not in the format above.
    #[error("not a ztbridge signature file: {0}")]
    Malformed(String),
    /// No trusted key made this signature over these bytes.
    #[error(
        "BAD signature: no trusted key ({trusted} tried) signed this content (the signature claims key id {key_id}); the file was changed or signed by another key"
    )]
    Bad {
        /// The key ID the signature names.
        key_id: String,
        /// How many keys were tried.
        trusted: usize,
    },
}

impl DetachedSignature {
    /// Signs `bytes` (the whole content of the file called `file`).
    pub fn sign(bytes: &[u8], file: &str, key: &SecretKey) -> DetachedSignature {
        let signature = key.ed25519().sign(bytes, None);
        DetachedSignature {
            file: file.to_string(),
            key_id: key.public_key().key_id().to_string(),
            signature: *signature,
        }
    }

    /// The signature file's text.
    pub fn to_text(&self) -> String {
        // 64 bytes always fit; an empty string would only fail verification.
        let b64 = Base64::encode_to_string(self.signature).unwrap_or_default();
        format!(
            "{MAGIC}\nfile: {}\nkey-id: {}\ned25519: {b64}\n",
            self.file, self.key_id
        )
    }

    /// Reads a signature file's text.
    pub fn parse(text: &str) -> Result<DetachedSignature, DetachedError> {
        let bad = |m: &str| DetachedError::Malformed(m.to_string());
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        if lines.next() != Some(MAGIC) {
            return Err(bad(&format!("the first line must be `{MAGIC}`")));
        }
        let (mut file, mut key_id, mut signature) = (None, None, None);
        for line in lines {
            let (name, value) = line
                .split_once(':')
                .map(|(n, v)| (n.trim(), v.trim()))
                .ok_or_else(|| bad(&format!("expected `name: value`, got {line:?}")))?;
            let slot = match name {
                "file" => &mut file,
                "key-id" => &mut key_id,
                "ed25519" => &mut signature,
                other => return Err(bad(&format!("unknown line `{other}`"))),
            };
            if slot.replace(value.to_string()).is_some() {
                return Err(bad(&format!("`{name}` given twice")));
            }
        }
        let signature = signature.ok_or_else(|| bad("no `ed25519:` line"))?;
        let mut raw = [0u8; 64];
        let decoded = Base64::decode(&mut raw, signature.as_bytes(), None)
            .map_err(|_| bad("the `ed25519:` value is not base64"))?;
        if decoded.len() != 64 {
            return Err(bad("the `ed25519:` value is not a 64-byte signature"));
        }
        Ok(DetachedSignature {
            file: file.unwrap_or_default(),
            key_id: key_id.unwrap_or_default(),
            signature: raw,
        })
    }

    /// Checks the signature over `bytes` against every trusted key; returns
    /// the key ID of the one that made it.
    pub fn verify(&self, bytes: &[u8], trusted: &TrustedKeys) -> Result<String, DetachedError> {
        let signature = ed25519_compact::Signature::new(self.signature);
        trusted
            .iter()
            .find(|k| k.ed25519().verify(bytes, &signature).is_ok())
            .map(|k| k.key_id().to_string())
            .ok_or_else(|| DetachedError::Bad {
                key_id: self.key_id.clone(),
                trusted: trusted.len(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::signing::KeyPair;

    fn trusted(pair: &KeyPair) -> TrustedKeys {
        let mut t = TrustedKeys::new();
        t.insert(pair.public.clone());
        t
    }

    #[test]
    fn round_trip_and_tamper() {
        let pair = KeyPair::generate();
        let content = b"abc  ztbridge\n";
        let sig = DetachedSignature::sign(content, "SHA256SUMS", &pair.secret);
        let text = sig.to_text();
        assert!(text.starts_with("ztbridge-signature v1\nfile: SHA256SUMS\n"));
        let back = DetachedSignature::parse(&text).unwrap();
        assert_eq!(back, sig);
        assert_eq!(
            back.verify(content, &trusted(&pair)).unwrap(),
            pair.public.key_id()
        );
        // One changed byte, or another key: refused.
        assert!(matches!(
            back.verify(b"abd  ztbridge\n", &trusted(&pair)),
            Err(DetachedError::Bad { .. })
        ));
        let other = KeyPair::generate();
        assert!(back.verify(content, &trusted(&other)).is_err());
    }

    #[test]
    fn malformed_files_are_refused() {
        for text in [
            "",
            "hello\n",
            "ztbridge-signature v1\n",
            "ztbridge-signature v1\ned25519: !!!\n",
            "ztbridge-signature v1\ned25519: AAAA\n",
            "ztbridge-signature v1\nwhat: x\n",
        ] {
            assert!(
                matches!(
                    DetachedSignature::parse(text),
                    Err(DetachedError::Malformed(_))
                ),
                "{text:?}"
            );
        }
    }
}
