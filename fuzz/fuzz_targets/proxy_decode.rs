//! Feeds arbitrary bytes to the PROXY protocol decoder. Beyond "never panics", it checks the
//! promises callers rely on: a complete header never claims bytes it was not given, decoding
//! looks at nothing beyond the header, an incomplete prefix never asks for a read past the
//! largest possible header, and a decoded TCP header re-encodes to one that decodes the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sumun_wire::proxy::{self, Command, Decoded, Transport};

fuzz_target!(|data: &[u8]| {
    match proxy::decode(data) {
        Ok(Decoded::Complete { header, consumed }) => {
            assert!(consumed <= data.len());
            let alone = proxy::decode(&data[..consumed]);
            assert_eq!(
                alone,
                Ok(Decoded::Complete {
                    header: header.clone(),
                    consumed
                })
            );
            if let (Command::Proxy, Transport::Stream, Some(src), Some(dst)) = (
                header.command,
                header.transport,
                header.source,
                header.destination,
            ) {
                let tlvs: Vec<_> = header.tlvs.iter().collect();
                let mut again = Vec::new();
                proxy::encode_v2_with_tlvs(src, dst, &tlvs, &mut again)
                    .expect("TLVs that were decoded fit when encoded again");
                match proxy::decode(&again) {
                    Ok(Decoded::Complete {
                        header: h,
                        consumed: n,
                    }) => {
                        assert_eq!(n, again.len());
                        assert_eq!(h.source, Some(src));
                        assert_eq!(h.destination, Some(dst));
                        assert_eq!(h.tlvs, header.tlvs);
                    }
                    other => panic!("re-encoded header did not decode: {other:?}"),
                }
            }
        }
        Ok(Decoded::Incomplete { needed_at_least }) => {
            assert!(needed_at_least >= 1);
            assert!(data.len() + needed_at_least <= 16 + proxy::V2_MAX_PAYLOAD);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
