//! Just enough of the atproto repository format to verify a record proof
//! (`com.atproto.sync.getRecord`): a CAR file of DAG-CBOR blocks whose root is a signed
//! commit, the MST nodes on the path to a key, and the record.

use std::collections::HashMap;

use cid::Cid;
use ipld_core::ipld::Ipld;
use serde_json::Value;

use crate::jose::{Alg, PublicKey};

/// DAG-CBOR multicodec.
const DAG_CBOR: u64 = 0x71;
/// SHA-256 multihash code.
const SHA2_256: u64 = 0x12;

/// Why a record proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// Not a CAR file of DAG-CBOR blocks, or a block whose CID does not match its bytes.
    #[error("malformed CAR: {0}")]
    Car(&'static str),
    /// The commit is malformed or for another DID.
    #[error("bad commit: {0}")]
    Commit(&'static str),
    /// The commit signature does not verify with the DID's key.
    #[error("commit signature does not verify")]
    Signature,
    /// The MST has no such key (or a node on the path is missing).
    #[error("record not found in the repository proof")]
    NotFound,
    /// The record block is missing or not DAG-CBOR.
    #[error("bad record: {0}")]
    Record(&'static str),
}

/// A parsed CAR file: roots and blocks by CID, each block checked against its CID.
#[derive(Debug)]
pub struct Car {
    /// The roots (getRecord: one, the commit).
    pub roots: Vec<Cid>,
    blocks: HashMap<Cid, Vec<u8>>,
}

fn varint(bytes: &[u8], pos: &mut usize) -> Result<u64, ProofError> {
    let (value, rest) = unsigned_varint::decode::u64(&bytes[*pos..]).map_err(|_| ProofError::Car("bad varint"))?;
    *pos = bytes.len() - rest.len();
    Ok(value)
}

/// A varint-length-prefixed section at `pos`, advancing past it; `None` when the length
/// is unreadable or runs past the end (no arithmetic on an attacker's length overflows).
fn section<'a>(bytes: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let len = usize::try_from(varint(bytes, pos).ok()?).ok()?;
    let end = pos.checked_add(len)?;
    let out = bytes.get(*pos..end)?;
    *pos = end;
    Some(out)
}

impl Car {
    /// Parses a CARv1 file, verifying every block's SHA-256 CID.
    pub fn parse(bytes: &[u8]) -> Result<Car, ProofError> {
        let mut pos = 0;
        let header = section(bytes, &mut pos).ok_or(ProofError::Car("truncated header"))?;
        let header: Ipld =
            serde_ipld_dagcbor::from_slice(header).map_err(|_| ProofError::Car("header not DAG-CBOR"))?;
        let roots = match header_field(&header, "roots") {
            Some(Ipld::List(list)) => list
                .iter()
                .map(|r| if let Ipld::Link(c) = r { Ok(*c) } else { Err(ProofError::Car("root not a link")) })
                .collect::<Result<Vec<_>, _>>()?,
            _ => return Err(ProofError::Car("no roots")),
        };
        if header_field(&header, "version") != Some(&Ipld::Integer(1)) {
            return Err(ProofError::Car("not CAR version 1"));
        }
        let mut blocks = HashMap::new();
        while pos < bytes.len() {
            let block = section(bytes, &mut pos).ok_or(ProofError::Car("truncated block"))?;
            let mut reader = std::io::Cursor::new(block);
            let cid = Cid::read_bytes(&mut reader).map_err(|_| ProofError::Car("bad CID"))?;
            let data = &block[reader.position() as usize..];
            if cid.hash().code() != SHA2_256 || cid_for(cid.codec(), data) != cid {
                return Err(ProofError::Car("block does not match its CID"));
            }
            blocks.insert(cid, data.to_vec());
        }
        Ok(Car { roots, blocks })
    }

    /// A block decoded as DAG-CBOR.
    pub fn node(&self, cid: &Cid) -> Option<Ipld> {
        if cid.codec() != DAG_CBOR {
            return None;
        }
        serde_ipld_dagcbor::from_slice(self.blocks.get(cid)?).ok()
    }
}

/// The CIDv1 of `data` with this codec and SHA-256.
pub fn cid_for(codec: u64, data: &[u8]) -> Cid {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let hash = cid::multihash::Multihash::<64>::wrap(SHA2_256, digest.as_ref()).expect("32 bytes fit");
    Cid::new_v1(codec, hash)
}

/// The CID of a DAG-CBOR value.
pub fn dag_cbor_cid(value: &Ipld) -> (Cid, Vec<u8>) {
    let bytes = serde_ipld_dagcbor::to_vec(value).expect("IPLD values encode");
    (cid_for(DAG_CBOR, &bytes), bytes)
}

fn header_field<'a>(v: &'a Ipld, name: &str) -> Option<&'a Ipld> {
    match v {
        Ipld::Map(m) => m.get(name),
        _ => None,
    }
}

/// Verifies the proof that `did`'s repository holds `key` (`collection/rkey`), signed by
/// `signing_key`, and returns the record as JSON.
pub fn verify_record(car: &Car, did: &str, signing_key: &PublicKey, key: &str) -> Result<Value, ProofError> {
    let root = car.roots.first().ok_or(ProofError::Car("no root"))?;
    let commit = car.node(root).ok_or(ProofError::Commit("missing or not DAG-CBOR"))?;
    let Ipld::Map(mut fields) = commit else { return Err(ProofError::Commit("not a map")) };
    if fields.get("did") != Some(&Ipld::String(did.to_owned())) {
        return Err(ProofError::Commit("for another DID"));
    }
    if fields.get("version") != Some(&Ipld::Integer(3)) {
        return Err(ProofError::Commit("not version 3"));
    }
    let Some(Ipld::Bytes(sig)) = fields.remove("sig") else { return Err(ProofError::Commit("unsigned")) };
    let Some(Ipld::Link(data)) = fields.get("data").cloned() else { return Err(ProofError::Commit("no data")) };
    // The signature covers the DAG-CBOR encoding of the commit without `sig`.
    let unsigned = serde_ipld_dagcbor::to_vec(&Ipld::Map(fields)).map_err(|_| ProofError::Commit("re-encoding"))?;
    let alg = signing_key.alg();
    if !matches!(alg, Alg::Es256 | Alg::Es256k) || !signing_key.verify_lenient(alg, &unsigned, &sig, false) {
        return Err(ProofError::Signature);
    }
    let record_cid = mst_find(car, data, key.as_bytes())?;
    let record = car.node(&record_cid).ok_or(ProofError::Record("missing or not DAG-CBOR"))?;
    Ok(ipld_to_json(&record))
}

/// Walks the MST from `node` to `key` (ATPROTO repository spec: entries with prefix
/// compression, `l` left subtree, `t` right subtree of each entry).
fn mst_find(car: &Car, mut node: Cid, key: &[u8]) -> Result<Cid, ProofError> {
    // Bounded: an MST is shallow; a cycle or a hostile proof cannot loop forever.
    for _ in 0..64 {
        let Some(Ipld::Map(n)) = car.node(&node) else { return Err(ProofError::NotFound) };
        let entries = match n.get("e") {
            Some(Ipld::List(e)) => e,
            _ => return Err(ProofError::NotFound),
        };
        let mut next = match n.get("l") {
            Some(Ipld::Link(l)) => Some(*l),
            _ => None,
        };
        let mut previous: Vec<u8> = Vec::new();
        let mut descend = None;
        for entry in entries {
            let Ipld::Map(e) = entry else { return Err(ProofError::NotFound) };
            let (Some(Ipld::Integer(p)), Some(Ipld::Bytes(suffix))) = (e.get("p"), e.get("k")) else {
                return Err(ProofError::NotFound);
            };
            let p = usize::try_from(*p).ok().filter(|p| *p <= previous.len()).ok_or(ProofError::NotFound)?;
            let mut full = previous[..p].to_vec();
            full.extend_from_slice(suffix);
            match full.as_slice().cmp(key) {
                std::cmp::Ordering::Equal => {
                    return match e.get("v") {
                        Some(Ipld::Link(v)) => Ok(*v),
                        _ => Err(ProofError::NotFound),
                    };
                }
                std::cmp::Ordering::Greater => {
                    descend = Some(next);
                    break;
                }
                std::cmp::Ordering::Less => {
                    next = match e.get("t") {
                        Some(Ipld::Link(t)) => Some(*t),
                        _ => None,
                    };
                }
            }
            previous = full;
        }
        match descend.unwrap_or(next) {
            Some(child) => node = child,
            None => return Err(ProofError::NotFound),
        }
    }
    Err(ProofError::NotFound)
}

/// IPLD as JSON (links as `{"$link": cid}`, bytes as `{"$bytes": base64}`, as atproto
/// writes them).
pub fn ipld_to_json(v: &Ipld) -> Value {
    match v {
        Ipld::Null => Value::Null,
        Ipld::Bool(b) => Value::Bool(*b),
        Ipld::Integer(i) => i64::try_from(*i).map(Value::from).unwrap_or(Value::Null),
        Ipld::Float(f) => serde_json::Number::from_f64(*f).map(Value::Number).unwrap_or(Value::Null),
        Ipld::String(s) => Value::String(s.clone()),
        Ipld::Bytes(b) => {
            use base64::Engine as _;
            serde_json::json!({"$bytes": base64::engine::general_purpose::STANDARD_NO_PAD.encode(b)})
        }
        Ipld::List(l) => Value::Array(l.iter().map(ipld_to_json).collect()),
        Ipld::Map(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), ipld_to_json(v))).collect()),
        Ipld::Link(c) => serde_json::json!({"$link": c.to_string()}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::dev_identity::DidKey;
    use crate::tools::dev_repo::RepoProof;
    use serde_json::json;

    const DID: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";

    fn records() -> Vec<(String, Value)> {
        (0..6)
            .map(|i| {
                let key = format!("com.atproto.lexicon.schema/app.example.set{i}");
                (key, json!({"$type": "com.atproto.lexicon.schema", "lexicon": 1, "id": format!("app.example.set{i}")}))
            })
            .collect()
    }

    fn public(key: &DidKey) -> PublicKey {
        crate::identity::multikey::decode_multikey(&key.multikey()).unwrap()
    }

    #[test]
    fn valid_proofs_for_keys_in_either_subtree() {
        for key in [DidKey::k256(), DidKey::p256()] {
            let car = Car::parse(&RepoProof { did: DID, key: &key, records: records() }.car()).unwrap();
            for i in [0, 5] {
                let record =
                    verify_record(&car, DID, &public(&key), &format!("com.atproto.lexicon.schema/app.example.set{i}"))
                        .unwrap();
                assert_eq!(record["id"], format!("app.example.set{i}"));
            }
            let missing = verify_record(&car, DID, &public(&key), "com.atproto.lexicon.schema/app.example.nope");
            assert_eq!(missing.unwrap_err(), ProofError::NotFound);
        }
    }

    #[test]
    fn bad_proofs() {
        let key = DidKey::k256();
        let bytes = RepoProof { did: DID, key: &key, records: records() }.car();
        let car = Car::parse(&bytes).unwrap();
        let k = "com.atproto.lexicon.schema/app.example.set1";
        // Signed by someone else.
        assert_eq!(verify_record(&car, DID, &public(&DidKey::k256()), k).unwrap_err(), ProofError::Signature);
        // A commit for another DID.
        let other =
            Car::parse(&RepoProof { did: "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", key: &key, records: records() }.car())
                .unwrap();
        assert!(matches!(verify_record(&other, DID, &public(&key), k), Err(ProofError::Commit(_))));
        // Any changed byte in the last block (a record) breaks its CID.
        let mut tampered = bytes.clone();
        let last = tampered.len() - 3;
        tampered[last] ^= 1;
        assert!(Car::parse(&tampered).is_err());
        // Truncated and garbage.
        assert!(Car::parse(&bytes[..bytes.len() - 10]).is_err());
        assert!(Car::parse(b"").is_err());
        assert!(Car::parse(&[0xff; 40]).is_err());
        // A length prefix near u64::MAX (found by fuzzing: it used to overflow).
        assert!(Car::parse(&[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x00]).is_err());
    }
}
