//! CAR parsing and record-proof verification never panic on hostile bytes.
#![no_main]
use atgate::scope::repo::{Car, verify_record};

const KEY: &str = "zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme";

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let key = atgate::identity::multikey::decode_multikey(KEY).unwrap();
    if let Ok(car) = Car::parse(data) {
        let _ = verify_record(&car, "did:plc:ewvi7nxzyoun6zhxrhs64oiz", &key, "com.atproto.lexicon.schema/a.b.c");
    }
});
