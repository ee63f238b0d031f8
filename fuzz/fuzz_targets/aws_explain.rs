//! Feeds arbitrary bytes as the AWS CLI dumps of `sumun flows explain --aws` (split on 0xFF
//! into the security groups, ACLs, route tables, interfaces, TGW attachments and one TGW route
//! table's routes), then walks between the addresses the interfaces name. Beyond "never
//! panics": a walk lists all ten hops, and is admitted exactly when none fails.

#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use sumun_flows_tools::aws::{self, Model, Verdict};

fuzz_target!(|data: &[u8]| {
    let names = [
        aws::SECURITY_GROUPS,
        aws::NETWORK_ACLS,
        aws::ROUTE_TABLES,
        aws::NETWORK_INTERFACES,
        aws::TGW_ATTACHMENTS,
        "search-transit-gateway-routes/tgw-rtb-1.json",
    ];
    let mut files = BTreeMap::new();
    for (name, part) in names.iter().zip(data.split(|&b| b == 0xFF)) {
        files.insert(name.to_string(), part.to_vec());
    }
    let Ok(model) = Model::from_files(&files) else {
        return;
    };
    let addresses: Vec<_> = model.addresses().into_iter().take(4).collect();
    for &src in &addresses {
        for &dst in &addresses {
            for (protocol, port) in [(6, 5432), (17, 53), (1, 0)] {
                let Ok(ex) = aws::explain(&model, src, dst, protocol, port) else {
                    continue;
                };
                assert_eq!(ex.hops.len(), 10);
                assert_eq!(
                    ex.admitted,
                    ex.hops.iter().all(|h| h.verdict != Verdict::Fail)
                );
                let _ = aws::text(&ex);
            }
        }
    }
});
