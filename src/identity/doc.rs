//! DID documents: the few fields atproto uses (ATPROTO-AUTH.md §11.2), parsed once into
//! ready-to-verify keys so that a warm cache costs no decoding.

use serde_json::Value;

use super::multikey::decode_method;
use crate::jose::PublicKey;

/// Most verification methods and services looked at in one document; the rest are
/// ignored so that a hostile document cannot make parsing expensive.
const MAX_ENTRIES: usize = 32;

/// What atgate keeps of a DID document.
#[derive(Debug, Clone)]
pub struct DidDoc {
    /// The DID (equal to the document's `id`).
    pub did: String,
    /// The handle claimed in `alsoKnownAs` (`at://<handle>`), lowercased; not verified.
    pub handle: Option<String>,
    /// The `#atproto_pds` endpoint.
    pub pds: Option<url::Url>,
    /// Verification methods by fragment (`atproto`, `atproto_label`, ...), the first entry
    /// with `publicKeyMultibase` for each; `None` when its key does not decode.
    pub keys: Vec<(String, Option<PublicKey>)>,
}

/// Why a document was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DocError {
    /// Not a JSON object.
    #[error("DID document is not a JSON object")]
    NotObject,
    /// `id` is not the DID that was resolved.
    #[error("DID document id does not match the DID")]
    IdMismatch,
    /// `id` is not a DID in its canonical spelling (`did:web:EXAMPLE.com`): one identity
    /// must not have two names in policy lists, replay keys and rate limits.
    #[error("DID document id is not a canonical DID")]
    IdNotCanonical,
}

impl DidDoc {
    /// Parses the document fetched for `did` (canonical, see [`super::did::canonical`]).
    pub fn parse(did: &str, doc: &Value) -> Result<DidDoc, DocError> {
        let obj = doc.as_object().ok_or(DocError::NotObject)?;
        let id = obj.get("id").and_then(Value::as_str);
        if id.is_some_and(|id| !super::did::is_canonical(id)) {
            return Err(DocError::IdNotCanonical);
        }
        // ATPROTO-AUTH.md §11.1: the id equals the requested DID exactly.
        if id != Some(did) {
            return Err(DocError::IdMismatch);
        }
        let entries = |name: &str| obj.get(name).and_then(Value::as_array).into_iter().flatten().take(MAX_ENTRIES);
        // `#frag` or `<did>#frag`, as the reference accepts both.
        let fragment = |id: &str| -> Option<String> {
            let frag = id.strip_prefix(did).unwrap_or(id).strip_prefix('#')?;
            (!frag.is_empty()).then(|| frag.to_owned())
        };
        let handle = entries("alsoKnownAs")
            .filter_map(Value::as_str)
            .find_map(|aka| aka.strip_prefix("at://"))
            .map(str::to_ascii_lowercase);
        let pds = entries("service")
            .filter(|s| s.get("id").and_then(Value::as_str).and_then(fragment).as_deref() == Some("atproto_pds"))
            .find(|s| s.get("type").and_then(Value::as_str) == Some("AtprotoPersonalDataServer"))
            .and_then(|s| s.get("serviceEndpoint").and_then(Value::as_str))
            .filter(|e| e.starts_with("https://") || e.starts_with("http://"))
            .and_then(|e| url::Url::parse(e).ok());
        let mut keys: Vec<(String, Option<PublicKey>)> = Vec::new();
        for vm in entries("verificationMethod") {
            let Some(frag) = vm.get("id").and_then(Value::as_str).and_then(fragment) else { continue };
            if keys.iter().any(|(f, _)| *f == frag) {
                continue; // the first entry with an id wins
            }
            let (Some(kind), Some(multibase)) =
                (vm.get("type").and_then(Value::as_str), vm.get("publicKeyMultibase").and_then(Value::as_str))
            else {
                continue;
            };
            keys.push((frag, decode_method(kind, multibase).ok()));
        }
        Ok(DidDoc { did: did.to_owned(), handle, pds, keys })
    }

    /// The key of verification method `#fragment`.
    pub fn key(&self, fragment: &str) -> Option<&PublicKey> {
        self.keys.iter().find(|(f, _)| f == fragment).and_then(|(_, k)| k.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DID: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";

    // ATPROTO-AUTH.md 15.6.
    fn spec_doc() -> Value {
        serde_json::from_str(r##"{"id":"did:plc:ewvi7nxzyoun6zhxrhs64oiz","alsoKnownAs":["at://alice.test"],"verificationMethod":[{"id":"did:plc:ewvi7nxzyoun6zhxrhs64oiz#atproto","type":"Multikey","controller":"did:plc:ewvi7nxzyoun6zhxrhs64oiz","publicKeyMultibase":"zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"}],"service":[{"id":"#atproto_pds","type":"AtprotoPersonalDataServer","serviceEndpoint":"https://pds.example.com"}]}"##).unwrap()
    }

    #[test]
    fn parses_the_spec_document() {
        let doc = DidDoc::parse(DID, &spec_doc()).unwrap();
        assert_eq!(doc.handle.as_deref(), Some("alice.test"));
        assert_eq!(doc.pds.as_ref().map(url::Url::as_str), Some("https://pds.example.com/"));
        assert_eq!(doc.key("atproto").map(PublicKey::alg), Some(crate::jose::Alg::Es256k));
        assert!(doc.key("atproto_label").is_none());
    }

    #[test]
    fn refuses_or_skips_bad_parts() {
        assert_eq!(DidDoc::parse(DID, &json!([])).unwrap_err(), DocError::NotObject);
        assert_eq!(DidDoc::parse("did:plc:other", &spec_doc()).unwrap_err(), DocError::IdMismatch);
        // A document naming itself in another spelling is refused, whatever was asked for.
        for (asked, id) in
            [("did:web:example.com", "did:web:EXAMPLE.com"), ("did:web:EXAMPLE.com", "did:web:EXAMPLE.com")]
        {
            let doc = json!({"id": id});
            assert_eq!(DidDoc::parse(asked, &doc).unwrap_err(), DocError::IdNotCanonical, "{asked}");
        }
        let upper = json!({"id": DID.to_ascii_uppercase().replace("DID:PLC:", "did:plc:")});
        assert_eq!(DidDoc::parse(DID, &upper).unwrap_err(), DocError::IdNotCanonical);
        let doc = json!({
            "id": DID,
            "alsoKnownAs": [7, "https://x", "at://Bob.Example.COM"],
            "verificationMethod": [
                {"id": "#atproto", "type": "Multikey"},
                {"id": "#atproto", "type": "Multikey", "publicKeyMultibase": "zDnaehX3LgKKTBMJfH3j1PZskwLGbcFmc7DwFDHBxqajRAJof"},
                {"id": "#atproto", "type": "Multikey", "publicKeyMultibase": "zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"},
                {"id": "#other", "type": "Multikey", "publicKeyMultibase": "zBAD"},
                {"id": "#atproto_label", "type": "Multikey", "publicKeyMultibase": "zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"},
                "junk", {"id": 5}
            ],
            "service": [
                {"id": "#atproto_pds", "type": "Other", "serviceEndpoint": "https://wrong.example"},
                {"id": "did:plc:ewvi7nxzyoun6zhxrhs64oiz#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": "ftp://x"}
            ]
        });
        let doc = DidDoc::parse(DID, &doc).unwrap();
        assert_eq!(doc.handle.as_deref(), Some("bob.example.com"));
        assert!(doc.pds.is_none());
        // The first `#atproto` with a key is the one; an undecodable key is no key.
        assert_eq!(doc.key("atproto").map(PublicKey::alg), Some(crate::jose::Alg::Es256));
        assert!(doc.key("other").is_none());
        assert_eq!(doc.key("atproto_label").map(PublicKey::alg), Some(crate::jose::Alg::Es256k));
    }
}
