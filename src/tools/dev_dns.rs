//! A DNS server on loopback (UDP) answering TXT queries from a fixed table, for handle and
//! `_lexicon` resolution in tests, benches and development.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::TXT;
use hickory_resolver::proto::rr::{RData, Record};

/// Serves `records` (name without the trailing dot -> TXT strings) on `addr`; other names
/// get NXDOMAIN. Returns the address and a query counter.
pub async fn spawn(
    addr: SocketAddr,
    records: HashMap<String, Vec<String>>,
) -> std::io::Result<(SocketAddr, Arc<AtomicU64>)> {
    let socket = tokio::net::UdpSocket::bind(addr).await?;
    let local = socket.local_addr()?;
    let queries = Arc::new(AtomicU64::new(0));
    let counter = queries.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            let Ok(query) = Message::from_vec(&buf[..n]) else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut answer = Message::new();
            answer.set_id(query.id()).set_message_type(MessageType::Response).set_authoritative(true);
            answer.set_recursion_available(true);
            for q in query.queries() {
                answer.add_query(q.clone());
                let name = q.name().to_ascii().trim_end_matches('.').to_ascii_lowercase();
                match records.get(&name) {
                    Some(values) => {
                        for v in values {
                            let txt = RData::TXT(TXT::new(vec![v.clone()]));
                            answer.add_answer(Record::from_rdata(q.name().clone(), 60, txt));
                        }
                    }
                    None => {
                        answer.set_response_code(ResponseCode::NXDomain);
                    }
                }
            }
            if let Ok(bytes) = answer.to_vec() {
                let _ = socket.send_to(&bytes, peer).await;
            }
        }
    });
    Ok((local, queries))
}
