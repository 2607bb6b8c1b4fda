//! Public keys in DID documents (ATPROTO-AUTH.md §10.4): `Multikey` (`z` + base58btc of a
//! multicodec varint and a compressed point) and the legacy `EcdsaSecp256r1/k1
//! VerificationKey2019` types (a multibase of the raw SEC1 point). Every point is checked
//! to be on its curve.

use crate::jose::{Alg, PublicKey};

/// Multicodec prefixes (unsigned varints) of the two key types atproto uses.
const P256_CODEC: [u8; 2] = [0x80, 0x24];
const K256_CODEC: [u8; 2] = [0xe7, 0x01];

/// Why a key could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not a supported multibase string.
    #[error("invalid multibase")]
    Multibase,
    /// A codec other than P-256 or secp256k1 public keys.
    #[error("unsupported key codec")]
    Codec,
    /// A verification method type atproto does not use.
    #[error("unsupported verification method type")]
    Type,
    /// Not a valid point on the curve.
    #[error("invalid public key")]
    Point,
}

/// Decodes a multibase string: base58btc (`z`), base16 (`f`/`F`), base32 (`b`/`B`, no
/// padding), base64 (`m`) and base64url (`u`/`U`), the prefixes the reference accepts.
pub fn decode_multibase(text: &str) -> Result<Vec<u8>, KeyError> {
    use data_encoding::{BASE32_NOPAD, BASE64_NOPAD, BASE64URL_NOPAD, HEXLOWER_PERMISSIVE};
    let mut chars = text.chars();
    let prefix = chars.next().ok_or(KeyError::Multibase)?;
    let rest = chars.as_str().as_bytes();
    // Keys are tens of bytes; refuse anything absurd before decoding it.
    if rest.is_empty() || rest.len() > 256 {
        return Err(KeyError::Multibase);
    }
    let decoded = match prefix {
        'z' => bs58::decode(rest).into_vec().ok(),
        'f' | 'F' => HEXLOWER_PERMISSIVE.decode(rest).ok(),
        'b' => {
            BASE32_NOPAD.decode(&rest.to_ascii_uppercase()).ok().filter(|_| !rest.iter().any(u8::is_ascii_uppercase))
        }
        'B' => BASE32_NOPAD.decode(rest).ok(),
        'm' => BASE64_NOPAD.decode(rest).ok(),
        'u' | 'U' => BASE64URL_NOPAD.decode(rest).ok(),
        _ => None,
    };
    decoded.ok_or(KeyError::Multibase)
}

/// Decodes a `Multikey` `publicKeyMultibase` (or the part of a `did:key` after `did:key:`).
pub fn decode_multikey(text: &str) -> Result<PublicKey, KeyError> {
    let body = text.strip_prefix('z').ok_or(KeyError::Multibase)?;
    if body.is_empty() || body.len() > 128 {
        return Err(KeyError::Multibase);
    }
    let bytes = bs58::decode(body).into_vec().map_err(|_| KeyError::Multibase)?;
    let (alg, point) = if let Some(p) = bytes.strip_prefix(&P256_CODEC) {
        (Alg::Es256, p)
    } else if let Some(p) = bytes.strip_prefix(&K256_CODEC) {
        (Alg::Es256k, p)
    } else {
        return Err(KeyError::Codec);
    };
    // Multikey carries the compressed form.
    if point.len() != 33 {
        return Err(KeyError::Point);
    }
    PublicKey::from_sec1(alg, point).map_err(|_| KeyError::Point)
}

/// Decodes a verification method's key by its `type`.
pub fn decode_method(kind: &str, multibase: &str) -> Result<PublicKey, KeyError> {
    let legacy = match kind {
        "Multikey" => return decode_multikey(multibase),
        "EcdsaSecp256r1VerificationKey2019" => Alg::Es256,
        "EcdsaSecp256k1VerificationKey2019" => Alg::Es256k,
        _ => return Err(KeyError::Type),
    };
    let point = decode_multibase(multibase)?;
    if !matches!(point.len(), 33 | 65) {
        return Err(KeyError::Point);
    }
    PublicKey::from_sec1(legacy, &point).map_err(|_| KeyError::Point)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::decode_hex;

    /// The key's uncompressed SEC1 bytes, via its JWK.
    fn uncompressed(key: &PublicKey) -> String {
        match key {
            PublicKey::K256(k) => hex(k.to_encoded_point(false).as_bytes()),
            PublicKey::P256(p) => hex(p.as_ref()),
        }
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    // ATPROTO-AUTH.md 15.6 and 15.7.
    #[test]
    fn spec_multikeys() {
        let p = decode_multikey("zDnaembgSGUhZULN2Caob4HLJPaxBh92N7rtH21TErzqf8HQo").unwrap();
        assert_eq!(p.alg(), Alg::Es256);
        assert_eq!(
            uncompressed(&p),
            "043a8273eece6b0d82e95c3506617db5000e14ff0023325d0bb0274918bc6a6cdcd5d4c2b6cd48ca52c5650fb2d80047738c7b8627cd6a7035ad780f153669fad5"
        );
        let k = decode_multikey("zQ3shqwJEJyMBsBXCWyCBpUBMqxcon9oHB7mCvx4sSpMdLJwc").unwrap();
        assert_eq!(k.alg(), Alg::Es256k);
        assert!(uncompressed(&k).starts_with("04a7d7fbf04846fa1fcff728ba594f3c5819345e88908e874b537ba5a65d1fc3bb"));

        let svc = decode_multikey("zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme").unwrap();
        let secret = k256::ecdsa::SigningKey::from_slice(
            &decode_hex("9085d2bef69286a6cbb51623c8fa258629945cd55ca705cc4e66700396894e0c").unwrap(),
        )
        .unwrap();
        {
            assert_eq!(uncompressed(&svc), hex(secret.verifying_key().to_encoded_point(false).as_bytes()));
        }
        let p256 = decode_multikey("zDnaehX3LgKKTBMJfH3j1PZskwLGbcFmc7DwFDHBxqajRAJof").unwrap();
        assert_eq!(p256.alg(), Alg::Es256);
    }

    #[test]
    fn legacy_and_multikey_agree() {
        let legacy = decode_method(
            "EcdsaSecp256k1VerificationKey2019",
            "zQYEBzXeuTM9UR3rfvNag6L3RNAs5pQZyYPsomTsgQhsxLdEgCrPTLgFna8yqCnxPpNT7DBk6Ym3dgPKNu86vt9GR",
        )
        .unwrap();
        let multi = decode_method("Multikey", "zQ3shXjHeiBuRCKmM36cuYnm7YEMzhGnCmCyW92sRJ9pribSF").unwrap();
        assert_eq!(uncompressed(&legacy), uncompressed(&multi));
        assert_eq!(
            uncompressed(&legacy),
            "049951fea6921a35a4c9386dae5c27ecdb052edf760556938e7961caefae53b1d8497964002ae3b6630d19ca3ec52cfe4c1faf2a2ca4cf1debdcc44a1e2791c9c6"
        );
        // The same point in base16 and base64url multibase.
        let raw = decode_hex(&uncompressed(&legacy)).unwrap();
        let f = format!("f{}", hex(&raw));
        assert!(decode_method("EcdsaSecp256k1VerificationKey2019", &f).is_ok());
        let u = format!("u{}", crate::jose::b64url(&raw));
        assert!(decode_method("EcdsaSecp256k1VerificationKey2019", &u).is_ok());
    }

    #[test]
    fn bad_keys() {
        assert_eq!(decode_multikey("").unwrap_err(), KeyError::Multibase);
        assert_eq!(decode_multikey("Q3sh").unwrap_err(), KeyError::Multibase);
        assert_eq!(decode_multikey("z0OIl").unwrap_err(), KeyError::Multibase); // not base58
        // An ed25519 multikey (codec 0xed).
        assert_eq!(decode_multikey("z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK").unwrap_err(), KeyError::Codec);
        // The secp256k1 codec with a point that is not on the curve.
        let mut bytes = K256_CODEC.to_vec();
        bytes.push(0x02);
        bytes.extend([0xff; 32]);
        let off = format!("z{}", bs58::encode(&bytes).into_string());
        assert_eq!(decode_multikey(&off).unwrap_err(), KeyError::Point);
        // Truncated.
        let short = format!("z{}", bs58::encode(&bytes[..20]).into_string());
        assert_eq!(decode_multikey(&short).unwrap_err(), KeyError::Point);
        assert_eq!(decode_method("Ed25519VerificationKey2020", "z6Mk").unwrap_err(), KeyError::Type);
        assert_eq!(decode_method("EcdsaSecp256k1VerificationKey2019", "xabc").unwrap_err(), KeyError::Multibase);
        assert_eq!(decode_multikey(&format!("z{}", "1".repeat(500))).unwrap_err(), KeyError::Multibase);
    }
}
