//! Builds signed repository proofs (CAR files) the way a PDS answers
//! `com.atproto.sync.getRecord`: a signed commit, a two-level MST and the records. For
//! tests and development; atgate only verifies such files.

use std::collections::BTreeMap;

use cid::Cid;
use ipld_core::ipld::Ipld;
use serde_json::Value;

use super::dev_identity::DidKey;
use crate::scope::repo::dag_cbor_cid;

/// JSON as IPLD (numbers as integers when they are, else floats).
pub fn json_to_ipld(v: &Value) -> Ipld {
    match v {
        Value::Null => Ipld::Null,
        Value::Bool(b) => Ipld::Bool(*b),
        Value::Number(n) => {
            n.as_i64().map(|i| Ipld::Integer(i.into())).unwrap_or(Ipld::Float(n.as_f64().unwrap_or(0.0)))
        }
        Value::String(s) => Ipld::String(s.clone()),
        Value::Array(a) => Ipld::List(a.iter().map(json_to_ipld).collect()),
        Value::Object(o) => Ipld::Map(o.iter().map(|(k, v)| (k.clone(), json_to_ipld(v))).collect()),
    }
}

/// What to build; each field can be spoiled to make a bad proof.
#[derive(Debug)]
pub struct RepoProof<'a> {
    /// The DID written in the commit.
    pub did: &'a str,
    /// The key that signs the commit.
    pub key: &'a DidKey,
    /// Records by `collection/rkey`.
    pub records: Vec<(String, Value)>,
}

fn mst_node(left: Option<Cid>, entries: &[(String, Cid)]) -> Ipld {
    let mut previous = String::new();
    let e = entries
        .iter()
        .map(|(key, value)| {
            let p = key.bytes().zip(previous.bytes()).take_while(|(a, b)| a == b).count();
            previous = key.clone();
            Ipld::Map(BTreeMap::from([
                ("p".to_owned(), Ipld::Integer(p as i128)),
                ("k".to_owned(), Ipld::Bytes(key.as_bytes()[p..].to_vec())),
                ("v".to_owned(), Ipld::Link(*value)),
                ("t".to_owned(), Ipld::Null),
            ]))
        })
        .collect();
    Ipld::Map(BTreeMap::from([("l".to_owned(), left.map_or(Ipld::Null, Ipld::Link)), ("e".to_owned(), Ipld::List(e))]))
}

fn push_block(out: &mut Vec<u8>, cid: &Cid, data: &[u8]) {
    let cid_bytes = cid.to_bytes();
    let mut len = unsigned_varint::encode::u64_buffer();
    out.extend_from_slice(unsigned_varint::encode::u64((cid_bytes.len() + data.len()) as u64, &mut len));
    out.extend_from_slice(&cid_bytes);
    out.extend_from_slice(data);
}

impl RepoProof<'_> {
    /// The CAR file: header, commit, MST nodes (the first half of the keys in a left
    /// subtree, the rest in the root), records.
    pub fn car(&self) -> Vec<u8> {
        let mut blocks: Vec<(Cid, Vec<u8>)> = Vec::new();
        let mut keyed: Vec<(String, Cid)> = self
            .records
            .iter()
            .map(|(key, record)| {
                let (cid, bytes) = dag_cbor_cid(&json_to_ipld(record));
                blocks.push((cid, bytes));
                (key.clone(), cid)
            })
            .collect();
        keyed.sort();
        let (lower, upper) = keyed.split_at(keyed.len() / 2);
        let left = (!lower.is_empty()).then(|| {
            let (cid, bytes) = dag_cbor_cid(&mst_node(None, lower));
            blocks.push((cid, bytes));
            cid
        });
        let (root, root_bytes) = dag_cbor_cid(&mst_node(left, upper));
        blocks.push((root, root_bytes));
        let mut commit = BTreeMap::from([
            ("did".to_owned(), Ipld::String(self.did.to_owned())),
            ("version".to_owned(), Ipld::Integer(3)),
            ("data".to_owned(), Ipld::Link(root)),
            ("rev".to_owned(), Ipld::String("3lbkwlvexgc2a".to_owned())),
            ("prev".to_owned(), Ipld::Null),
        ]);
        let unsigned = serde_ipld_dagcbor::to_vec(&Ipld::Map(commit.clone())).expect("encodes");
        commit.insert("sig".to_owned(), Ipld::Bytes(self.key.sign_bytes(&unsigned)));
        let (commit_cid, commit_bytes) = dag_cbor_cid(&Ipld::Map(commit));
        let header = Ipld::Map(BTreeMap::from([
            ("roots".to_owned(), Ipld::List(vec![Ipld::Link(commit_cid)])),
            ("version".to_owned(), Ipld::Integer(1)),
        ]));
        let header = serde_ipld_dagcbor::to_vec(&header).expect("encodes");
        let mut out = Vec::new();
        let mut len = unsigned_varint::encode::u64_buffer();
        out.extend_from_slice(unsigned_varint::encode::u64(header.len() as u64, &mut len));
        out.extend_from_slice(&header);
        push_block(&mut out, &commit_cid, &commit_bytes);
        for (cid, data) in &blocks {
            push_block(&mut out, cid, data);
        }
        out
    }
}
