//! Compact JWS and JWK parsing never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(jws) = atgate::jose::jws::parse(text)
            && let Some(jwk) = jws.header.jwk.as_ref()
            && let Ok(jwk) = atgate::jose::Jwk::from_value(jwk)
        {
            let _ = jwk.public_key();
            let _ = jwk.thumbprint();
        }
    }
});
