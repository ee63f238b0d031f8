//! Rule synthesis: the cover is optimal (checked against brute force on small universes), the
//! budget split is optimal (brute force over every split), budgets are never exceeded, and every
//! accepted flow of a generated log is admitted by the rules suggested from it.

use std::net::IpAddr;

use sumun_flows_tools::generate::{generate, GenOptions};
use sumun_flows_tools::input::read_flows;
use sumun_flows_tools::orient::{conn, orient, Orientation};
use sumun_flows_tools::suggest::{
    output, plan, plan_nacl, split_budget, Cover, DestGroup, Family, Observed, Plan,
};

/// All prefixes of the /`base_len` universe starting at `base` (IPv4).
fn prefixes(base: u128, base_len: u8) -> Vec<(u128, u8)> {
    let mut out = Vec::new();
    for plen in base_len..=32 {
        let size = 1u128 << (32 - plen);
        let count = 1u128 << (plen - base_len);
        for i in 0..count {
            out.push((base + i * size, plen));
        }
    }
    out
}

fn contains((net, plen): (u128, u8), a: u128) -> bool {
    a >= net && a < net + (1u128 << (32 - plen))
}

/// The least number of addresses covered by at most `k` of `candidates` covering all of
/// `addrs`, by trying every combination.
fn brute(addrs: &[u128], candidates: &[(u128, u8)], k: usize) -> u128 {
    fn rec(
        addrs: &[u128],
        cands: &[(u128, u8)],
        start: usize,
        left: usize,
        chosen: &mut Vec<(u128, u8)>,
        best: &mut u128,
    ) {
        if addrs
            .iter()
            .all(|&a| chosen.iter().any(|&p| contains(p, a)))
        {
            // Chosen blocks may nest; the count is of distinct addresses covered.
            let mut total = 0u128;
            let mut sorted = chosen.clone();
            sorted.sort();
            let mut end = 0u128;
            for &(net, plen) in &sorted {
                let hi = net + (1u128 << (32 - plen));
                if hi > end {
                    total += hi - net.max(end);
                    end = hi;
                }
            }
            *best = (*best).min(total);
        }
        if left == 0 {
            return;
        }
        for i in start..cands.len() {
            chosen.push(cands[i]);
            rec(addrs, cands, i + 1, left - 1, chosen, best);
            chosen.pop();
        }
    }
    let mut best = u128::MAX;
    rec(addrs, candidates, 0, k, &mut Vec::new(), &mut best);
    best
}

fn check_cover(addrs: &[u128], c: &Cover, k: usize, expected: u128) {
    assert_eq!(c.covered(k), expected, "addrs {addrs:?} k {k}");
    let blocks = c.blocks(k);
    assert!(blocks.len() <= k);
    let size: u128 = blocks.iter().map(|&(_, l)| 1u128 << (32 - l)).sum();
    assert_eq!(size, expected, "blocks {blocks:?} do not add up");
    for &a in addrs {
        assert!(blocks.iter().any(|&b| contains(b, a)), "{a} not covered");
    }
}

#[test]
fn cover_is_optimal_against_every_subset_of_prefixes_in_a_28() {
    let base = 0x0a00_0000u128;
    let all = prefixes(base, 28);
    let mut rng = fastrand::Rng::with_seed(28);
    for _ in 0..60 {
        let n = rng.usize(1..=9);
        let mut addrs: Vec<u128> = (0..n).map(|_| base + rng.u128(0..16)).collect();
        addrs.sort_unstable();
        addrs.dedup();
        let c = Cover::solve(addrs.clone(), Family::V4, 4);
        for k in 1..=4usize.min(addrs.len()) {
            check_cover(&addrs, &c, k, brute(&addrs, &all, k));
        }
    }
}

#[test]
fn cover_is_optimal_on_random_26_universes() {
    let base = 0xc0a8_0100u128; // 192.168.1.0/26
    let mut rng = fastrand::Rng::with_seed(26);
    for round in 0..80 {
        let n = rng.usize(1..=10);
        let mut addrs: Vec<u128> = (0..n).map(|_| base + rng.u128(0..64)).collect();
        addrs.sort_unstable();
        addrs.dedup();
        // Only prefixes holding an observed address can be in an optimal cover; that is every
        // ancestor of every address in the universe.
        let mut cands: Vec<(u128, u8)> = prefixes(base, 26)
            .into_iter()
            .filter(|&p| addrs.iter().any(|&a| contains(p, a)))
            .collect();
        cands.sort();
        let kmax = 1 + round % 4;
        let c = Cover::solve(addrs.clone(), Family::V4, kmax);
        for k in 1..=kmax.min(addrs.len()) {
            check_cover(&addrs, &c, k, brute(&addrs, &cands, k));
        }
        // The exact cover count is the first K with nothing over-permitted.
        let big = Cover::solve(addrs.clone(), Family::V4, 64);
        let first_exact = (1..=addrs.len()).find(|&k| big.over(k) == 0);
        assert_eq!(first_exact, Some(big.exact()), "addrs {addrs:?}");
    }
}

#[test]
fn budget_split_is_optimal_against_every_split() {
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..200 {
        let m = rng.usize(1..=4);
        let weights: Vec<usize> = (0..m).map(|_| rng.usize(1..=3)).collect();
        // Non-increasing random curves over k = 1..=6.
        let curves: Vec<Vec<u128>> = (0..m)
            .map(|_| {
                let mut v: Vec<u128> = (0..6).map(|_| rng.u128(0..100)).collect();
                v.sort_unstable_by(|a, b| b.cmp(a));
                v
            })
            .collect();
        let budget = rng.usize(1..=12);
        let fns: Vec<Box<dyn Fn(usize) -> u128>> = curves
            .iter()
            .map(|c| {
                let c = c.clone();
                Box::new(move |k: usize| c[k.min(6) - 1]) as Box<dyn Fn(usize) -> u128>
            })
            .collect();
        let refs: Vec<&dyn Fn(usize) -> u128> = fns.iter().map(|b| b.as_ref()).collect();
        let got = split_budget(&weights, &refs, budget);
        // Brute force over k_i in 1..=6.
        let mut best: Option<u128> = None;
        let mut ks = vec![1usize; m];
        loop {
            let used: usize = ks.iter().zip(&weights).map(|(k, w)| k * w).sum();
            if used <= budget {
                let cost: u128 = ks.iter().enumerate().map(|(i, &k)| curves[i][k - 1]).sum();
                best = Some(best.map_or(cost, |b| b.min(cost)));
            }
            let mut i = 0;
            while i < m && ks[i] == 6 {
                ks[i] = 1;
                i += 1;
            }
            if i == m {
                break;
            }
            ks[i] += 1;
        }
        match (got, best) {
            (None, None) => {}
            (Some(ks), Some(best)) => {
                let used: usize = ks.iter().zip(&weights).map(|(k, w)| k * w).sum();
                assert!(used <= budget);
                let cost: u128 = ks
                    .iter()
                    .enumerate()
                    .map(|(i, &k)| curves[i][k.min(6) - 1])
                    .sum();
                assert_eq!(cost, best, "weights {weights:?} budget {budget}");
            }
            (got, best) => panic!("feasibility differs: {got:?} vs {best:?}"),
        }
    }
}

fn generated(seed: u64, records: u64, tcp_flags: bool) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sumun-suggest-{}-{seed}-{records}-{tcp_flags}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let path = dir.join("flows.log");
    let mut file = std::fs::File::create(&path).expect("create");
    let opts = GenOptions {
        seed,
        records,
        tcp_flags,
        ..GenOptions::default()
    };
    generate(&opts, &mut file).expect("generate");
    path
}

fn plan_for(path: &std::path::Path, limit: usize, groups: Vec<DestGroup>) -> Plan {
    let mut observed = Observed::new(groups);
    read_flows(&[path.to_path_buf()], true, |f| observed.add(f)).expect("read");
    plan(observed, limit)
}

/// Every accepted record is admitted: in the orientation the record itself shows when it shows
/// one, else in one of the two.
fn assert_admits_all(path: &std::path::Path, plan: &Plan) {
    let mut checked = 0;
    read_flows(&[path.to_path_buf()], true, |f| {
        let r = &f.record;
        if r.log_status != sumun_flows::LogStatus::Ok || r.action != sumun_flows::Action::Accept {
            return;
        }
        checked += 1;
        let o = orient(f);
        let ok = |o| {
            let c = conn(f, o);
            plan.admits(c.client, c.server, c.protocol, c.port)
        };
        match o {
            Orientation::Unknown => assert!(ok(Orientation::Forward) || ok(Orientation::Reverse)),
            o => assert!(ok(o), "not admitted: {}", f.record),
        }
    })
    .expect("read");
    assert!(checked > 1000);
}

#[test]
fn suggested_rules_admit_every_observed_flow_within_the_budget() {
    for (limit, tcp_flags) in [(60, false), (8, true), (2, false)] {
        let path = generated(11, 30_000, tcp_flags);
        let plan = plan_for(&path, limit, Vec::new());
        assert!(plan.destinations.len() >= 5, "{plan:#?}");
        for d in &plan.destinations {
            assert!(d.rules_v4 <= limit, "{} uses {} rules", d.name, d.rules_v4);
            assert!(d.rules_v6 <= limit);
            for s in &d.rule_sets {
                assert_eq!(s.rules, s.cidrs.len() * s.ports.len().max(1));
                assert!(s.rules <= s.exact_rules.max(s.rules));
            }
        }
        assert_admits_all(&path, &plan);
        // The web server's many internet clients need aggregation; the database, with its 60
        // app hosts and cron hosts, fits exactly with a generous budget.
        let web = plan
            .destination("10.0.10.5".parse::<IpAddr>().expect("ip"))
            .expect("web planned");
        assert!(web.rule_sets.iter().any(|s| s.over_permission > 0));
        if limit == 60 {
            let pg = plan
                .destination("10.0.20.10".parse::<IpAddr>().expect("ip"))
                .expect("pg planned");
            let set = pg
                .rule_sets
                .iter()
                .find(|s| s.ports == vec![(5432, 5432)])
                .expect("5432");
            assert_eq!(set.over_permission, 0, "{set:?}");
            assert_eq!(set.rules, set.exact_rules);
        }
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }
}

#[test]
fn groups_share_one_budget() {
    let path = generated(12, 10_000, false);
    let group = DestGroup::parse("dbs=10.0.20.0/24").expect("group");
    let plan = plan_for(&path, 10, vec![group]);
    let dbs = plan
        .destinations
        .iter()
        .find(|d| d.name == "dbs")
        .expect("group planned");
    assert!(dbs.rules_v4 <= 10);
    let ports: Vec<(u16, u16)> = dbs.rule_sets.iter().flat_map(|s| s.ports.clone()).collect();
    for p in [5432, 3306, 6379] {
        assert!(ports.iter().any(|&(a, b)| a <= p && p <= b), "{ports:?}");
    }
    assert_admits_all(&path, &plan);
    let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
}

#[test]
fn outputs_parse_back() {
    let path = generated(13, 5_000, false);
    let plan = plan_for(&path, 20, Vec::new());

    // JSON: the plan with its costs.
    let json = serde_json::to_value(&plan).expect("json");
    let dests = json["destinations"].as_array().expect("array");
    assert_eq!(dests.len(), plan.destinations.len());
    assert!(dests[0]["rule_sets"][0]["over_permission"].is_number());

    // AWS CLI: IpPermissions per group, every block a CIDR.
    let cli = output::aws_cli(&plan);
    let text = serde_json::to_string_pretty(&cli).expect("serialise");
    let back: serde_json::Value = serde_json::from_str(&text).expect("parse back");
    let mut blocks = 0;
    for g in back.as_array().expect("groups") {
        for p in g["IpPermissions"].as_array().expect("perms") {
            assert!(p["IpProtocol"].is_string() && p["FromPort"].is_i64() && p["ToPort"].is_i64());
            for r in p["IpRanges"].as_array().into_iter().flatten() {
                r["CidrIp"]
                    .as_str()
                    .expect("cidr")
                    .parse::<ipnet::Ipv4Net>()
                    .expect("v4 cidr");
                blocks += 1;
            }
        }
    }
    let rules: usize = plan
        .destinations
        .iter()
        .map(|d| d.rules_v4 + d.rules_v6)
        .sum();
    assert_eq!(blocks, rules);

    // Terraform: balanced blocks, one resource per rule, the attributes the provider requires.
    let tf = output::terraform(&plan);
    assert_eq!(tf.matches('{').count(), tf.matches('}').count());
    assert_eq!(
        tf.matches("resource \"aws_vpc_security_group_ingress_rule\"")
            .count(),
        rules
    );
    let mut names = std::collections::HashSet::new();
    for block in tf.split("\nresource ").skip(1) {
        let name = block.split('"').nth(3).expect("resource name");
        assert!(names.insert(name.to_string()), "duplicate resource {name}");
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        for attr in [
            "security_group_id",
            "ip_protocol",
            "cidr_ipv4",
            "from_port",
            "to_port",
        ] {
            assert!(block.contains(attr), "{attr} missing in {block}");
        }
        for line in block.lines().filter(|l| l.contains(" = ")) {
            let value = line.split(" = ").nth(1).expect("value").trim();
            assert!(
                value.starts_with('"') && value.ends_with('"')
                    || value.parse::<i64>().is_ok()
                    || value.starts_with("var."),
                "bad value in {line}"
            );
        }
    }

    // Sumun: the groups are accepted by the config loader as part of a config.
    let groups = output::sumun(&plan);
    let config = format!("[gateway]\nname = \"suggest-test\"\n{groups}");
    let parsed = sumun_config::parse(&config, std::path::Path::new("suggested.toml"))
        .unwrap_or_else(|e| panic!("{e}\n{config}"));
    let count: usize = plan.destinations.iter().map(|d| d.rule_sets.len()).sum();
    assert_eq!(parsed.security_groups.len(), count);
    let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
}

#[test]
fn network_acl_rules_admit_every_flow_and_its_reply_within_the_budget() {
    let path = generated(14, 20_000, true);
    let mut observed = Observed::new(vec![DestGroup::parse("data=10.0.20.0/24").expect("group")]);
    read_flows(std::slice::from_ref(&path), true, |f| observed.add(f)).expect("read");
    let plan = plan_nacl(observed, 20);
    for d in &plan.destinations {
        assert!(d.rules_v4 <= 20 && d.rules_v6 <= 20, "{}", d.name);
        assert!(d.return_rules.len() <= 20, "{}", d.name);
    }
    assert_admits_all(&path, &plan);
    let mut replies = 0;
    read_flows(std::slice::from_ref(&path), true, |f| {
        let r = &f.record;
        if r.log_status != sumun_flows::LogStatus::Ok || r.action != sumun_flows::Action::Accept {
            return;
        }
        let o = orient(f);
        if o == Orientation::Unknown {
            return;
        }
        let c = conn(f, o);
        assert!(
            plan.admits_reply(c.server, c.client, c.protocol, c.client_port),
            "reply not admitted: {}",
            f.record
        );
        replies += 1;
    })
    .expect("read");
    assert!(replies > 1000);
    let entries = output::nacl_aws_cli(&plan);
    let n = entries.as_array().expect("array").len();
    let expected: usize = plan
        .destinations
        .iter()
        .map(|d| d.rules_v4 + d.rules_v6 + d.return_rules.len())
        .sum();
    assert_eq!(n, expected);
    let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
}

/// End to end: the Sumun groups suggested from a log, attached to listeners on the observed
/// destinations and ports, make `explain` admit every accepted TCP connection of that log.
#[test]
fn replaying_the_log_through_explain_admits_every_flow() {
    use std::fmt::Write as _;
    let path = generated(15, 8_000, true);
    let plan = plan_for(&path, 10, Vec::new());
    let mut config = output::sumun(&plan);
    config.push_str(
        "\n[[target_groups]]\nname = \"t\"\ntargets = [{ address = \"127.0.0.1:5432\" }]\n",
    );
    let mut listeners = 0;
    for d in &plan.destinations {
        for set in d.rule_sets.iter().filter(|s| s.protocol == 6) {
            for &(a, b) in &set.ports {
                for port in a..=b {
                    let host: IpAddr = d.name.parse().expect("host destination");
                    let _ = write!(
                        config,
                        "\n[[listeners]]\nname = \"l{listeners}\"\nbind = \"{}\"\nprotocol = \"tcp\"\n\
                         target_group = \"t\"\nsecurity_groups = [\"{}\"]\n",
                        std::net::SocketAddr::new(host, port),
                        output::sumun_group_name(d, set)
                    );
                    listeners += 1;
                }
            }
        }
    }
    let config = sumun_config::parse(&config, std::path::Path::new("replay.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(listeners >= 5);
    let mut replayed = 0;
    read_flows(std::slice::from_ref(&path), true, |f| {
        let r = &f.record;
        if r.log_status != sumun_flows::LogStatus::Ok
            || r.action != sumun_flows::Action::Accept
            || r.protocol != 6
        {
            return;
        }
        let o = orient(f);
        if o == Orientation::Unknown {
            return;
        }
        let c = conn(f, o);
        let ex = sumun_flows_tools::explain::explain(&config, c.client, c.server, c.port);
        assert!(ex.admitted, "{ex:#?}");
        replayed += 1;
    })
    .expect("read");
    assert!(replayed > 1000);
    let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
}

/// IPv4 and IPv6 clients of one destination have budgets of their own, as in AWS (the IPv6
/// clients sit in three far-apart clusters, so three blocks beat two and each budget is used up).
#[test]
fn ipv4_and_ipv6_are_budgeted_separately() {
    let mut observed = Observed::new(Vec::new());
    let mut lines = Vec::new();
    for i in 0..40u32 {
        lines.push(format!(
            "2 1 eni-1 10.{}.{}.7 10.0.0.5 40000 5432 6 3 200 1704067200 1704067201 ACCEPT OK",
            i % 7,
            i * 5
        ));
        lines.push(format!(
            "2 1 eni-1 2001:db8:{:x}::{:x} 10.0.0.5 40000 5432 6 3 200 1704067200 1704067201 ACCEPT OK",
            [0x1, 0x8000, 0xffff][i as usize % 3],
            i + 1
        ));
    }
    for l in &lines {
        let flow = sumun_flows::Format::default_v2().parse(l).expect("line");
        observed.add(&flow);
    }
    let plan = plan(observed, 3);
    let d = &plan.destinations[0];
    assert_eq!((d.rules_v4, d.rules_v6), (3, 3), "{d:#?}");
    assert!(d.rule_sets.iter().any(|s| s.family == Family::V6));
    for l in &lines {
        let r = sumun_flows::parse_line(l).expect("line");
        assert!(plan.admits(r.srcaddr, r.dstaddr, 6, 5432), "{l}");
    }
}

/// Network ACLs may deny: clients from all of 10.1.0.0/24 but one address, and from
/// 2001:db8::/120 but one, get an allow and a deny each (rather than eight allow rules), numbered
/// deny first; every observed client is admitted and the holes are not; the outputs say
/// `deny` where they must.
#[test]
fn network_acl_carves_a_hole_with_a_deny_rule() {
    let dir = std::env::temp_dir().join(format!("sumun-suggest-carve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let path = dir.join("flows.log");
    let mut text = String::new();
    for i in 0..256u32 {
        if i == 77 {
            continue;
        }
        text.push_str(&format!(
            "2 123456789012 eni-1 10.1.0.{i} 10.0.20.5 {} 5432 6 10 1000 1704067200 1704067260 ACCEPT OK\n",
            40000 + i
        ));
        text.push_str(&format!(
            "2 123456789012 eni-1 2001:db8::{i:x} 10.0.20.5 {} 5432 6 10 1000 1704067200 1704067260 ACCEPT OK\n",
            40000 + i
        ));
    }
    std::fs::write(&path, text).expect("write");
    let mut observed = Observed::new(vec![DestGroup::parse("data=10.0.20.0/24").expect("group")]);
    read_flows(std::slice::from_ref(&path), true, |f| observed.add(f)).expect("read");
    let plan = plan_nacl(observed, 20);
    let d = &plan.destinations[0];
    assert_eq!(d.rule_sets.len(), 2, "{d:?}");
    for set in &d.rule_sets {
        assert_eq!(set.rules, 2, "{set:?}");
        assert_eq!(set.exact_rules, 2, "{set:?}");
        assert_eq!(set.over_permission, 0, "{set:?}");
    }
    let v4 = &d.rule_sets[0];
    assert_eq!(v4.cidrs, vec!["10.1.0.0/24".parse().expect("net")]);
    assert_eq!(v4.denies, vec!["10.1.0.77/32".parse().expect("net")]);
    let server: IpAddr = "10.0.20.5".parse().expect("ip");
    for i in 0..256u32 {
        let v4: IpAddr = format!("10.1.0.{i}").parse().expect("ip");
        let v6: IpAddr = format!("2001:db8::{i:x}").parse().expect("ip");
        assert_eq!(plan.admits(v4, server, 6, 5432), i != 77, "{v4}");
        assert_eq!(plan.admits(v6, server, 6, 5432), i != 77, "{v6}");
        assert!(!plan.admits(v4, server, 6, 5433));
    }
    // Allow rules alone would need eight blocks for the same exactness.
    let addrs: Vec<u128> = (0..256u128)
        .filter(|&i| i != 77)
        .map(|i| 0x0a01_0000 + i)
        .collect();
    assert_eq!(Cover::solve(addrs, Family::V4, 20).exact(), 8);

    let tf = output::nacl_terraform(&plan);
    let deny = tf.find("rule_action    = \"deny\"").expect("a deny rule");
    let allow = tf
        .find("rule_action    = \"allow\"")
        .expect("an allow rule");
    assert!(deny < allow, "{tf}");
    assert!(tf.contains("cidr_block     = \"10.1.0.77/32\""), "{tf}");
    let cli = output::nacl_aws_cli(&plan);
    let inbound: Vec<(u64, String, String)> = cli
        .as_array()
        .expect("array")
        .iter()
        .filter(|e| e["Egress"] == false && e.get("CidrBlock").is_some())
        .map(|e| {
            (
                e["RuleNumber"].as_u64().expect("number"),
                e["RuleAction"].as_str().expect("action").to_string(),
                e["CidrBlock"].as_str().expect("cidr").to_string(),
            )
        })
        .collect();
    assert_eq!(
        inbound,
        [
            (100, "deny".to_string(), "10.1.0.77/32".to_string()),
            (110, "allow".to_string(), "10.1.0.0/24".to_string())
        ]
    );
    // Replies go to the allowed block only (outbound: allow rules).
    let back: Vec<String> = d.return_rules.iter().map(|r| r.cidr.to_string()).collect();
    assert_eq!(back, ["10.1.0.0/24", "2001:db8::/120"]);
    let _ = std::fs::remove_dir_all(&dir);
}
