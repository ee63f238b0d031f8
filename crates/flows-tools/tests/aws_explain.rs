//! `explain` over an AWS network model made of AWS CLI dumps (tests/fixtures/aws): an app VPC,
//! a database VPC and an analytics VPC joined by a transit gateway, as in seed 002. Each case
//! asserts the verdict of every hop, what decided it, and the fixes; the fixes are then applied
//! to the dumps (as the AWS CLI would) and the walk run again, which must admit.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sumun_flows_tools::aws::{self, AwsExplanation, Model, Verdict};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/aws")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn run_in(dir: &Path, src: &str, dst: &str, port: u16) -> AwsExplanation {
    let model = Model::load(dir).expect("model");
    aws::explain(&model, ip(src), ip(dst), 6, port).expect("explain")
}

fn run(src: &str, dst: &str, port: u16) -> AwsExplanation {
    run_in(&fixtures(), src, dst, port)
}

/// (hop, verdict) of every hop, in order.
fn verdicts(ex: &AwsExplanation) -> Vec<(&str, Verdict)> {
    ex.hops
        .iter()
        .map(|h| (h.hop.as_str(), h.verdict))
        .collect()
}

fn hop<'a>(ex: &'a AwsExplanation, name: &str) -> &'a aws::Hop {
    ex.hops.iter().find(|h| h.hop == name).expect(name)
}

use Verdict::{Fail, Pass, Skip};

const HOPS: [&str; 10] = [
    "source SG egress",
    "source NACL outbound",
    "source route table",
    "TGW route table",
    "destination NACL inbound",
    "destination SG ingress",
    "destination NACL outbound (return)",
    "destination route table (return)",
    "TGW route table (return)",
    "source NACL inbound (return)",
];

fn expect(ex: &AwsExplanation, verdicts_in_order: [Verdict; 10]) {
    let want: Vec<(&str, Verdict)> = HOPS.into_iter().zip(verdicts_in_order).collect();
    assert_eq!(verdicts(ex), want, "{}", aws::text(ex));
}

struct Tmp(PathBuf);
impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn read(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json")
}

fn write(path: &Path, v: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(v).expect("json")).expect("write");
}

/// The value of `--flag` in a command line, the quoted JSON included.
fn arg(cmd: &str, flag: &str) -> String {
    let rest = cmd.split_once(&format!("{flag} ")).expect(flag).1;
    if let Some(quoted) = rest.strip_prefix('\'') {
        quoted
            .split_once('\'')
            .expect("closing quote")
            .0
            .to_string()
    } else {
        rest.split_whitespace().next().expect("value").to_string()
    }
}

/// Applies the suggested AWS CLI commands to a copy of the fixture dumps, as AWS would.
fn apply(fixes: &[String]) -> Tmp {
    let dir = std::env::temp_dir().join(format!(
        "sumun-aws-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(dir.join("search-transit-gateway-routes")).expect("mkdir");
    for entry in walk(&fixtures()) {
        let rel = entry.strip_prefix(fixtures()).expect("prefix");
        std::fs::copy(&entry, dir.join(rel)).expect("copy");
    }
    for cmd in fixes {
        if cmd.starts_with("aws ec2 authorize-security-group-") {
            let key = if cmd.contains("-egress ") {
                "IpPermissionsEgress"
            } else {
                "IpPermissions"
            };
            let path = dir.join("describe-security-groups.json");
            let mut v = read(&path);
            let group = arg(cmd, "--group-id");
            let perms: Value = serde_json::from_str(&arg(cmd, "--ip-permissions")).expect("perms");
            for g in v["SecurityGroups"].as_array_mut().expect("groups") {
                if g["GroupId"] == group.as_str() {
                    for p in perms.as_array().expect("array") {
                        g[key].as_array_mut().expect("perms").push(p.clone());
                    }
                }
            }
            write(&path, &v);
        } else if cmd.starts_with("aws ec2 create-network-acl-entry ") {
            let path = dir.join("describe-network-acls.json");
            let mut v = read(&path);
            let mut entry: Value =
                serde_json::from_str(&arg(cmd, "--cli-input-json")).expect("entry");
            let acl = entry["NetworkAclId"].clone();
            entry
                .as_object_mut()
                .expect("object")
                .remove("NetworkAclId");
            let a = v["NetworkAcls"]
                .as_array_mut()
                .expect("acls")
                .iter_mut()
                .find(|a| a["NetworkAclId"] == acl)
                .expect("acl of the fix");
            let entries = a["Entries"].as_array_mut().expect("entries");
            assert!(
                !entries
                    .iter()
                    .any(|e| e["RuleNumber"] == entry["RuleNumber"]
                        && e["Egress"] == entry["Egress"]),
                "rule number in use: {cmd}"
            );
            entries.push(entry);
            write(&path, &v);
        } else if cmd.starts_with("aws ec2 create-route ") {
            let path = dir.join("describe-route-tables.json");
            let mut v = read(&path);
            let table = arg(cmd, "--route-table-id");
            for t in v["RouteTables"].as_array_mut().expect("tables") {
                if t["RouteTableId"] == table.as_str() {
                    t["Routes"]
                        .as_array_mut()
                        .expect("routes")
                        .push(serde_json::json!({
                            "DestinationCidrBlock": arg(cmd, "--destination-cidr-block"),
                            "TransitGatewayId": arg(cmd, "--transit-gateway-id"),
                            "Origin": "CreateRoute",
                            "State": "active",
                        }));
                }
            }
            write(&path, &v);
        } else if cmd.starts_with("aws ec2 replace-transit-gateway-route ")
            || cmd.starts_with("aws ec2 create-transit-gateway-route ")
        {
            let path = dir.join(format!(
                "search-transit-gateway-routes/{}.json",
                arg(cmd, "--transit-gateway-route-table-id")
            ));
            let mut v = read(&path);
            let cidr = arg(cmd, "--destination-cidr-block");
            let attachment = arg(cmd, "--transit-gateway-attachment-id");
            let atts = read(&dir.join("describe-transit-gateway-attachments.json"));
            let vpc = atts["TransitGatewayAttachments"]
                .as_array()
                .expect("attachments")
                .iter()
                .find(|a| a["TransitGatewayAttachmentId"] == attachment.as_str())
                .expect("attachment")["ResourceId"]
                .clone();
            let routes = v["Routes"].as_array_mut().expect("routes");
            routes.retain(|r| r["DestinationCidrBlock"] != cidr.as_str());
            routes.push(serde_json::json!({
                "DestinationCidrBlock": cidr,
                "TransitGatewayAttachments": [{
                    "ResourceId": vpc,
                    "TransitGatewayAttachmentId": attachment,
                    "ResourceType": "vpc",
                }],
                "Type": "static",
                "State": "active",
            }));
            write(&path, &v);
        } else {
            panic!("unexpected fix: {cmd}");
        }
    }
    Tmp(dir)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn all_fixes(ex: &AwsExplanation) -> Vec<String> {
    ex.hops.iter().flat_map(|h| h.fix.clone()).collect()
}

#[test]
fn admitted_across_the_transit_gateway_names_the_rule_of_every_hop() {
    let ex = run("10.0.2.15", "10.1.2.20", 5432);
    assert!(ex.admitted, "{}", aws::text(&ex));
    expect(&ex, [Pass; 10]);
    assert_eq!(
        hop(&ex, "TGW route table").decided_by,
        "10.1.0.0/16 -> tgw-attach-0d0d0d0d0d0d0d0d2 (vpc-0a1b2c3d4e5f60d02) (propagated, active)"
    );
    assert_eq!(
        hop(&ex, "TGW route table").resource,
        "tgw-rtb-0c1d2e3f4a5b60718"
    );
    assert_eq!(
        hop(&ex, "destination SG ingress").decided_by,
        "sg-0d44dd44dd44dd444 tcp port 5432 from 10.0.2.0/25 (app subnet a, first half)"
    );
    assert_eq!(
        hop(&ex, "destination NACL inbound").decided_by,
        "rule 100 allow tcp port 5432 10.0.2.0/24"
    );
    assert_eq!(
        hop(&ex, "source NACL inbound (return)").decided_by,
        "rule 100 allow tcp ports 1024-65535 10.0.0.0/8"
    );
    assert_eq!(
        hop(&ex, "source SG egress").decided_by,
        "sg-0a11aa11aa11aa111 all traffic to 0.0.0.0/0"
    );
    assert!(ex.hops.iter().all(|h| h.fix.is_empty()));
    let text = aws::text(&ex);
    assert!(
        text.starts_with("admitted: 10.0.2.15 -> 10.1.2.20 tcp 5432\n"),
        "{text}"
    );
}

#[test]
fn every_failing_hop_is_reported_with_a_fix_that_works() {
    // batch-1: its group allows only HTTPS out, the database's ACL and group do not know its
    // subnet, and its own subnet's ACL lets in only the app VPC, so the replies are dropped.
    let ex = run("10.0.3.40", "10.1.2.20", 5432);
    assert!(!ex.admitted);
    expect(
        &ex,
        [Fail, Pass, Pass, Pass, Fail, Fail, Pass, Pass, Pass, Fail],
    );
    assert_eq!(
        hop(&ex, "source SG egress").decided_by,
        "no outbound rule allows tcp port 5432 to 10.1.2.20"
    );
    assert_eq!(
        hop(&ex, "destination NACL inbound").decided_by,
        "rule * deny all traffic 0.0.0.0/0"
    );
    assert_eq!(
        hop(&ex, "destination NACL inbound").fix,
        vec![
            "aws ec2 create-network-acl-entry --cli-input-json '{\"CidrBlock\":\"10.0.3.40/32\",\
             \"Egress\":false,\"NetworkAclId\":\"acl-0ccc3333cccc33330\",\"PortRange\":{\"From\":\
             5432,\"To\":5432},\"Protocol\":\"6\",\"RuleAction\":\"allow\",\"RuleNumber\":120}'"
                .to_string()
        ]
    );
    assert_eq!(
        hop(&ex, "destination SG ingress").fix,
        vec![
            "aws ec2 authorize-security-group-ingress --group-id sg-0d44dd44dd44dd444 \
             --ip-permissions '[{\"FromPort\":5432,\"IpProtocol\":\"tcp\",\"IpRanges\":[{\"CidrIp\":\
             \"10.0.3.40/32\",\"Description\":\"sumun flows explain: 10.0.3.40 to 10.1.2.20\"}],\
             \"ToPort\":5432}]'"
                .to_string()
        ]
    );
    // The return path: the replies come from 10.1.2.20 to the client's ephemeral port.
    let back = &hop(&ex, "source NACL inbound (return)").fix[0];
    assert!(back.contains("\"CidrBlock\":\"10.1.2.20/32\""), "{back}");
    assert!(
        back.contains("\"PortRange\":{\"From\":1024,\"To\":65535}"),
        "{back}"
    );
    assert!(
        back.contains("\"NetworkAclId\":\"acl-0bbb2222bbbb22220\""),
        "{back}"
    );
    assert!(back.contains("\"Egress\":false"), "{back}");
    let egress = &hop(&ex, "source SG egress").fix[0];
    assert!(egress
        .starts_with("aws ec2 authorize-security-group-egress --group-id sg-0c33cc33cc33cc333 "));
    assert!(egress.contains("\"CidrIp\":\"10.1.2.20/32\""), "{egress}");
    // The prefix list of the batch group's second rule cannot be resolved from these dumps.
    assert!(
        ex.notes.iter().any(|n| n.contains("pl-6fa54006")),
        "{:?}",
        ex.notes
    );
    let text = aws::text(&ex);
    assert!(text.starts_with("refused: 10.0.3.40 -> 10.1.2.20 tcp 5432 (4 failing hops)\n"));
    assert_eq!(text.matches("    fix: aws ec2 ").count(), 4, "{text}");

    let fixed = apply(&all_fixes(&ex));
    let again = run_in(&fixed.0, "10.0.3.40", "10.1.2.20", 5432);
    assert!(again.admitted, "{}", aws::text(&again));
}

#[test]
fn acl_entries_are_evaluated_in_rule_number_order_first_match_wins() {
    // Rule 90 denies the quarantined host before rule 100 allows its /24.
    let ex = run("10.0.2.99", "10.1.2.20", 5432);
    expect(
        &ex,
        [Pass, Pass, Pass, Pass, Fail, Pass, Pass, Pass, Pass, Pass],
    );
    let h = hop(&ex, "destination NACL inbound");
    assert_eq!(h.decided_by, "rule 90 deny tcp port 5432 10.0.2.99/32");
    assert!(h.fix[0].contains("\"RuleNumber\":89"), "{}", h.fix[0]);
    assert!(ex
        .notes
        .iter()
        .any(|n| n.contains("denies with an explicit entry (rule 90)")));
    let fixed = apply(&all_fixes(&ex));
    assert!(run_in(&fixed.0, "10.0.2.99", "10.1.2.20", 5432).admitted);
}

#[test]
fn an_unassociated_subnet_uses_the_main_route_table_for_the_replies() {
    // subnet-...d3b0 has no route table of its own: the database VPC's main table has only the
    // local route, so the cache's replies never reach the app VPC.
    let ex = run("10.0.2.15", "10.1.3.21", 6379);
    expect(
        &ex,
        [Pass, Pass, Pass, Pass, Pass, Pass, Pass, Fail, Skip, Pass],
    );
    // The TGW hop of the return path is not reached.
    assert_eq!(
        hop(&ex, "TGW route table (return)").decided_by,
        "not reached"
    );
    let h = hop(&ex, "destination route table (return)");
    assert_eq!(h.resource, "rtb-0d01d01d01d01d010");
    assert_eq!(h.decided_by, "no route to 10.0.2.15");
    assert_eq!(
        h.fix,
        vec![
            "aws ec2 create-route --route-table-id rtb-0d01d01d01d01d010 --destination-cidr-block \
             10.0.0.0/16 --transit-gateway-id tgw-0f1e2d3c4b5a69870"
                .to_string()
        ]
    );
    let fixed = apply(&all_fixes(&ex));
    assert!(run_in(&fixed.0, "10.0.2.15", "10.1.3.21", 6379).admitted);
}

#[test]
fn a_longer_blackhole_route_wins_and_a_partly_open_ephemeral_range_fails() {
    let ex = run("10.0.2.15", "10.2.1.10", 443);
    expect(
        &ex,
        [Pass, Pass, Pass, Fail, Pass, Pass, Fail, Pass, Pass, Pass],
    );
    assert_eq!(
        hop(&ex, "TGW route table").decided_by,
        "10.2.1.0/24 -> nothing (static, blackhole)"
    );
    assert_eq!(
        hop(&ex, "TGW route table").fix,
        vec![
            "aws ec2 replace-transit-gateway-route --transit-gateway-route-table-id \
             tgw-rtb-0c1d2e3f4a5b60718 --destination-cidr-block 10.2.1.0/24 \
             --transit-gateway-attachment-id tgw-attach-0e0e0e0e0e0e0e0e3"
                .to_string()
        ]
    );
    // Only 32768-65535 is open back to the app VPC: clients picking lower ports are cut off.
    assert_eq!(
        hop(&ex, "destination NACL outbound (return)").decided_by,
        "ports 1024-32767: rule * deny all traffic 0.0.0.0/0"
    );
    let fixed = apply(&all_fixes(&ex));
    assert!(run_in(&fixed.0, "10.0.2.15", "10.2.1.10", 443).admitted);
}

#[test]
fn within_one_subnet_acls_do_not_apply_and_groups_match_by_reference() {
    let ex = run("10.0.2.15", "10.0.2.16", 8080);
    assert!(ex.admitted, "{}", aws::text(&ex));
    expect(
        &ex,
        [Pass, Skip, Pass, Skip, Skip, Pass, Skip, Pass, Skip, Skip],
    );
    assert_eq!(
        hop(&ex, "destination SG ingress").decided_by,
        "sg-0b22bb22bb22bb222 tcp port 8080 from members of sg-0a11aa11aa11aa111 (app servers)"
    );
    assert_eq!(
        hop(&ex, "source route table").decided_by,
        "10.0.0.0/16 -> local (active)"
    );
    // Not a member of the app group: refused by the same rule, stateful or not.
    let ex = run("10.0.3.40", "10.0.2.16", 8080);
    assert!(!ex.admitted);
    assert_eq!(hop(&ex, "destination SG ingress").verdict, Fail);
}

#[test]
fn udp_and_unknown_addresses_and_bad_dumps() {
    assert_eq!(aws::parse_protocol("udp"), Ok(17));
    assert_eq!(aws::parse_protocol("6"), Ok(6));
    assert!(aws::parse_protocol("sctp").is_err());
    // UDP to the database: the database ACL allows only TCP.
    let model = Model::load(&fixtures()).expect("model");
    let ex = aws::explain(&model, ip("10.0.2.15"), ip("10.1.2.20"), 17, 5432).expect("explain");
    assert_eq!(hop(&ex, "destination NACL inbound").verdict, Fail);
    assert!(hop(&ex, "destination NACL inbound").fix[0].contains("\"Protocol\":\"17\""));

    let err = aws::explain(&model, ip("10.9.9.9"), ip("10.1.2.20"), 6, 5432).expect_err("unknown");
    assert_eq!(
        err.to_string(),
        "source 10.9.9.9 is not an address of any interface in describe-network-interfaces.json"
    );

    let dir = apply(&[]);
    std::fs::write(
        dir.0.join("describe-network-acls.json"),
        "{\"NetworkAcls\": [",
    )
    .expect("w");
    let err = Model::load(&dir.0).expect_err("bad json").to_string();
    assert!(
        err.contains("describe-network-acls.json: not an AWS CLI JSON dump"),
        "{err}"
    );
    std::fs::remove_file(dir.0.join("describe-security-groups.json")).expect("rm");
    let err = Model::load(&dir.0).expect_err("missing").to_string();
    assert!(err.contains("describe-security-groups.json"), "{err}");
}

#[test]
fn without_the_attachments_dump_the_default_association_table_is_used() {
    let dir = apply(&[]);
    std::fs::remove_file(dir.0.join("describe-transit-gateway-attachments.json")).expect("rm");
    let ex = run_in(&dir.0, "10.0.2.15", "10.1.2.20", 5432);
    assert!(ex.admitted, "{}", aws::text(&ex));
    assert_eq!(
        hop(&ex, "TGW route table").resource,
        "tgw-rtb-0c1d2e3f4a5b60718"
    );
    // Without the TGW route table dump either, nothing says which table applies.
    std::fs::remove_file(dir.0.join("describe-transit-gateway-route-tables.json")).expect("rm");
    let ex = run_in(&dir.0, "10.0.2.15", "10.1.2.20", 5432);
    assert!(!ex.admitted);
    assert_eq!(hop(&ex, "TGW route table").verdict, Fail);
    assert!(
        hop(&ex, "TGW route table")
            .decided_by
            .contains("no default association route table"),
        "{}",
        aws::text(&ex)
    );
}
