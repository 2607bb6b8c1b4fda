//! DID document parsing never panics, whatever the JSON holds.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let id = value.get("id").and_then(|v| v.as_str()).unwrap_or("did:plc:ewvi7nxzyoun6zhxrhs64oiz").to_owned();
        if let Ok(doc) = atgate::identity::DidDoc::parse(&id, &value) {
            let _ = doc.key("atproto");
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = atgate::identity::did::method(text);
        let _ = atgate::identity::did::split_fragment(text);
        let _ = atgate::identity::handle::did_from_well_known(data);
        let _ = atgate::identity::handle::is_valid(text, true);
    }
});
