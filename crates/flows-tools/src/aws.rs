//! `explain --aws`: would AWS let SRC reach DST:PORT, walked hop by hop over a network model
//! made of the AWS CLI's own JSON dumps, and every hop that refuses it, each with the rule that
//! would let it through.
//!
//! The model is a directory holding, each named after the command that printed it:
//!
//! - `describe-network-interfaces.json`: where SRC and DST are (subnet, VPC, security groups);
//! - `describe-security-groups.json`, `describe-network-acls.json`,
//!   `describe-route-tables.json`;
//! - for transit gateways: `describe-transit-gateway-attachments.json` (which TGW route table
//!   each VPC attachment is associated with), `describe-transit-gateway-route-tables.json` (the
//!   default association table, when the attachments are not dumped) and
//!   `search-transit-gateway-routes/<tgw-rtb-id>.json` (the routes of each table).
//!
//! The walk: source SG egress → source NACL outbound → source subnet route table → TGW route
//! table → destination NACL inbound → destination SG ingress, then the replies: destination
//! NACL outbound and source NACL inbound on the ephemeral ports, with the destination's route
//! table and TGW route table back to the source. Security groups are stateful (replies pass);
//! ACLs are not, and do not apply between two interfaces of the same subnet.
//!
//! Fixes for security groups and ACLs come from the rule generator ([`crate::suggest`]): the
//! connection is planned as if observed, and its `aws-cli` output is given the real group or
//! ACL id and a rule number that comes before the entry that refused.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::suggest::{self, output, Observed};

/// The ports a client picks for its side of a connection, as AWS recommends allowing them in
/// network ACLs for replies.
pub const EPHEMERAL: (u16, u16) = (1024, 65535);
/// Largest dump file read.
pub const MAX_DUMP_BYTES: u64 = 64 << 20;
/// The number of the final `*` entry of every network ACL.
const DEFAULT_RULE: i64 = 32767;

#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{0}")]
    Model(String),
}

// ---- the dumps, in the shapes the AWS CLI prints (unknown fields are ignored) ----

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct SecurityGroupsDump {
    security_groups: Vec<SecurityGroup>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct SecurityGroup {
    group_id: String,
    group_name: String,
    ip_permissions: Vec<IpPermission>,
    ip_permissions_egress: Vec<IpPermission>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct IpPermission {
    ip_protocol: String,
    from_port: Option<i64>,
    to_port: Option<i64>,
    ip_ranges: Vec<IpRange>,
    ipv6_ranges: Vec<Ipv6Range>,
    user_id_group_pairs: Vec<GroupPair>,
    prefix_list_ids: Vec<PrefixListId>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct IpRange {
    cidr_ip: String,
    description: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Ipv6Range {
    cidr_ipv6: String,
    description: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct GroupPair {
    group_id: String,
    description: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct PrefixListId {
    prefix_list_id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct NetworkAclsDump {
    network_acls: Vec<NetworkAcl>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct NetworkAcl {
    network_acl_id: String,
    associations: Vec<AclAssociation>,
    entries: Vec<AclEntry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct AclAssociation {
    subnet_id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct AclEntry {
    rule_number: i64,
    egress: bool,
    rule_action: String,
    cidr_block: Option<String>,
    ipv6_cidr_block: Option<String>,
    protocol: String,
    port_range: Option<PortRange>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct PortRange {
    from: i64,
    to: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct RouteTablesDump {
    route_tables: Vec<RouteTable>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct RouteTable {
    route_table_id: String,
    vpc_id: String,
    associations: Vec<RtAssociation>,
    routes: Vec<Route>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct RtAssociation {
    main: bool,
    subnet_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Route {
    destination_cidr_block: Option<String>,
    destination_ipv6_cidr_block: Option<String>,
    gateway_id: Option<String>,
    transit_gateway_id: Option<String>,
    nat_gateway_id: Option<String>,
    vpc_peering_connection_id: Option<String>,
    network_interface_id: Option<String>,
    instance_id: Option<String>,
    egress_only_internet_gateway_id: Option<String>,
    local_gateway_id: Option<String>,
    state: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct TgwRouteTablesDump {
    transit_gateway_route_tables: Vec<TgwRouteTable>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct TgwRouteTable {
    transit_gateway_route_table_id: String,
    transit_gateway_id: String,
    default_association_route_table: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct TgwAttachmentsDump {
    transit_gateway_attachments: Vec<TgwAttachment>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct TgwAttachment {
    transit_gateway_attachment_id: String,
    transit_gateway_id: String,
    resource_type: String,
    resource_id: String,
    association: Option<TgwAssociation>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct TgwAssociation {
    transit_gateway_route_table_id: String,
    state: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct TgwRoutesDump {
    routes: Vec<TgwRoute>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct TgwRoute {
    destination_cidr_block: Option<String>,
    transit_gateway_attachments: Vec<TgwRouteAttachment>,
    #[serde(rename = "Type")]
    kind: String,
    state: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct TgwRouteAttachment {
    resource_id: String,
    transit_gateway_attachment_id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct InterfacesDump {
    network_interfaces: Vec<Interface>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Interface {
    network_interface_id: String,
    subnet_id: String,
    vpc_id: String,
    private_ip_address: Option<String>,
    private_ip_addresses: Vec<PrivateIp>,
    ipv6_addresses: Vec<Ipv6Address>,
    groups: Vec<GroupRef>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct PrivateIp {
    private_ip_address: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Ipv6Address {
    ipv6_address: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct GroupRef {
    group_id: String,
}

/// The network as the dumps describe it.
#[derive(Debug, Default)]
pub struct Model {
    groups: Vec<SecurityGroup>,
    acls: Vec<NetworkAcl>,
    route_tables: Vec<RouteTable>,
    tgw_route_tables: Vec<TgwRouteTable>,
    tgw_attachments: Vec<TgwAttachment>,
    /// Routes per TGW route table id, from `search-transit-gateway-routes`.
    tgw_routes: BTreeMap<String, Vec<TgwRoute>>,
    interfaces: Vec<Interface>,
}

/// The file names of the dumps (in DIR); TGW routes are `search-transit-gateway-routes/ID.json`.
pub const SECURITY_GROUPS: &str = "describe-security-groups.json";
pub const NETWORK_ACLS: &str = "describe-network-acls.json";
pub const ROUTE_TABLES: &str = "describe-route-tables.json";
pub const NETWORK_INTERFACES: &str = "describe-network-interfaces.json";
pub const TGW_ROUTE_TABLES: &str = "describe-transit-gateway-route-tables.json";
pub const TGW_ATTACHMENTS: &str = "describe-transit-gateway-attachments.json";
pub const TGW_ROUTES_DIR: &str = "search-transit-gateway-routes";
const REQUIRED: [&str; 4] = [
    SECURITY_GROUPS,
    NETWORK_ACLS,
    ROUTE_TABLES,
    NETWORK_INTERFACES,
];

fn parse_dump<T: for<'de> Deserialize<'de> + Default>(
    files: &BTreeMap<String, Vec<u8>>,
    name: &str,
) -> Result<T, AwsError> {
    match files.get(name) {
        None => Ok(T::default()),
        Some(bytes) => serde_json::from_slice(bytes).map_err(|e| AwsError::File {
            path: name.to_string(),
            message: format!("not an AWS CLI JSON dump: {e}"),
        }),
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, AwsError> {
    let err = |message: String| AwsError::File {
        path: path.display().to_string(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.len() > MAX_DUMP_BYTES {
        return Err(err(format!("larger than {} MiB", MAX_DUMP_BYTES >> 20)));
    }
    std::fs::read(path).map_err(|e| err(e.to_string()))
}

impl Model {
    /// Reads the dumps in `dir` (file names as in the module documentation).
    pub fn load(dir: &Path) -> Result<Model, AwsError> {
        let mut files = BTreeMap::new();
        for name in [
            SECURITY_GROUPS,
            NETWORK_ACLS,
            ROUTE_TABLES,
            NETWORK_INTERFACES,
            TGW_ROUTE_TABLES,
            TGW_ATTACHMENTS,
        ] {
            let path = dir.join(name);
            if !REQUIRED.contains(&name) && !path.exists() {
                continue;
            }
            files.insert(name.to_string(), read_file(&path)?);
        }
        if let Ok(entries) = std::fs::read_dir(dir.join(TGW_ROUTES_DIR)) {
            let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            for p in paths {
                let (Some(name), Some("json")) = (
                    p.file_name().and_then(|s| s.to_str()),
                    p.extension().and_then(|s| s.to_str()),
                ) else {
                    continue;
                };
                files.insert(format!("{TGW_ROUTES_DIR}/{name}"), read_file(&p)?);
            }
        }
        Model::from_files(&files).map_err(|e| match e {
            AwsError::File { path, message } => AwsError::File {
                path: dir.join(path).display().to_string(),
                message,
            },
            e => e,
        })
    }

    /// The model from dumps already read, keyed by their file name in DIR.
    pub fn from_files(files: &BTreeMap<String, Vec<u8>>) -> Result<Model, AwsError> {
        for name in REQUIRED {
            if !files.contains_key(name) {
                return Err(AwsError::File {
                    path: name.to_string(),
                    message: "missing".into(),
                });
            }
        }
        let sg: SecurityGroupsDump = parse_dump(files, SECURITY_GROUPS)?;
        let acl: NetworkAclsDump = parse_dump(files, NETWORK_ACLS)?;
        let rt: RouteTablesDump = parse_dump(files, ROUTE_TABLES)?;
        let eni: InterfacesDump = parse_dump(files, NETWORK_INTERFACES)?;
        let tgw_rt: TgwRouteTablesDump = parse_dump(files, TGW_ROUTE_TABLES)?;
        let tgw_att: TgwAttachmentsDump = parse_dump(files, TGW_ATTACHMENTS)?;
        let mut tgw_routes = BTreeMap::new();
        let prefix = format!("{TGW_ROUTES_DIR}/");
        for name in files.keys() {
            let Some(id) = name
                .strip_prefix(&prefix)
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            let dump: TgwRoutesDump = parse_dump(files, name)?;
            tgw_routes.insert(id.to_string(), dump.routes);
        }
        Ok(Model {
            groups: sg.security_groups,
            acls: acl.network_acls,
            route_tables: rt.route_tables,
            tgw_route_tables: tgw_rt.transit_gateway_route_tables,
            tgw_attachments: tgw_att.transit_gateway_attachments,
            tgw_routes,
            interfaces: eni.network_interfaces,
        })
    }

    /// The addresses of the interfaces in the model, as written.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.interfaces
            .iter()
            .flat_map(|i| {
                i.private_ip_address
                    .iter()
                    .chain(i.private_ip_addresses.iter().map(|p| &p.private_ip_address))
                    .chain(i.ipv6_addresses.iter().map(|a| &a.ipv6_address))
            })
            .filter_map(|a| a.parse().ok())
            .collect()
    }

    fn interface(&self, ip: IpAddr) -> Option<&Interface> {
        let text = ip.to_string();
        self.interfaces.iter().find(|i| {
            i.private_ip_address.as_deref() == Some(text.as_str())
                || i.private_ip_addresses
                    .iter()
                    .any(|p| p.private_ip_address == text)
                || i.ipv6_addresses
                    .iter()
                    .any(|a| a.ipv6_address.parse::<IpAddr>().ok() == Some(ip))
        })
    }

    fn acl_of(&self, subnet: &str) -> Option<&NetworkAcl> {
        self.acls
            .iter()
            .find(|a| a.associations.iter().any(|s| s.subnet_id == subnet))
    }

    /// The subnet's explicitly associated route table, else its VPC's main one.
    fn route_table_of(&self, subnet: &str, vpc: &str) -> Option<&RouteTable> {
        self.route_tables
            .iter()
            .find(|t| {
                t.associations
                    .iter()
                    .any(|a| a.subnet_id.as_deref() == Some(subnet))
            })
            .or_else(|| {
                self.route_tables
                    .iter()
                    .find(|t| t.vpc_id == vpc && t.associations.iter().any(|a| a.main))
            })
    }

    /// The CIDR of a VPC's `local` route covering `ip`, else its first `local` route.
    fn vpc_cidr(&self, vpc: &str, ip: IpAddr) -> Option<IpNet> {
        let locals: Vec<IpNet> = self
            .route_tables
            .iter()
            .filter(|t| t.vpc_id == vpc)
            .flat_map(|t| t.routes.iter())
            .filter(|r| r.gateway_id.as_deref() == Some("local"))
            .filter_map(route_net)
            .collect();
        locals
            .iter()
            .find(|n| n.contains(&ip))
            .or(locals.first())
            .copied()
    }

    fn vpc_attachment(&self, tgw: &str, vpc: &str) -> Option<&TgwAttachment> {
        self.tgw_attachments.iter().find(|a| {
            a.transit_gateway_id == tgw && a.resource_type == "vpc" && a.resource_id == vpc
        })
    }
}

fn route_net(r: &Route) -> Option<IpNet> {
    r.destination_cidr_block
        .as_deref()
        .or(r.destination_ipv6_cidr_block.as_deref())
        .and_then(|c| c.parse::<IpNet>().ok())
}

fn route_target(r: &Route) -> String {
    [
        &r.gateway_id,
        &r.transit_gateway_id,
        &r.nat_gateway_id,
        &r.vpc_peering_connection_id,
        &r.network_interface_id,
        &r.instance_id,
        &r.egress_only_internet_gateway_id,
        &r.local_gateway_id,
    ]
    .into_iter()
    .find_map(|t| t.clone())
    .unwrap_or_else(|| "(no target)".into())
}

// ---- protocols and ports ----

/// `tcp`, `udp`, `icmp`, `icmpv6` or a protocol number.
pub fn parse_protocol(text: &str) -> Result<u8, String> {
    match text.to_ascii_lowercase().as_str() {
        "tcp" => Ok(6),
        "udp" => Ok(17),
        "icmp" => Ok(1),
        "icmpv6" => Ok(58),
        n => n
            .parse::<u8>()
            .map_err(|_| format!("unknown protocol '{text}' (tcp, udp, icmp, icmpv6 or a number)")),
    }
}

fn has_ports(protocol: u8) -> bool {
    protocol == 6 || protocol == 17
}

/// Whether a rule's protocol (`-1`, a name, or a number as text) covers `protocol`.
fn protocol_matches(rule: &str, protocol: u8) -> bool {
    rule == "-1" || parse_protocol(rule).ok() == Some(protocol)
}

fn ports_text(protocol: u8, from: i64, to: i64) -> String {
    if !has_ports(protocol) || (from, to) == (-1, -1) || (from <= 0 && to >= 65535) {
        "all ports".into()
    } else if from == to {
        format!("port {from}")
    } else {
        format!("ports {from}-{to}")
    }
}

// ---- the result ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    /// The hop does not apply (ACLs between interfaces of one subnet, no TGW on the path).
    Skip,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "n/a",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hop {
    /// What is checked: `source SG egress`, `destination NACL inbound`, ...
    pub hop: String,
    /// The resource ids deciding it.
    pub resource: String,
    pub verdict: Verdict,
    /// The rule or route that decided, or why nothing did.
    pub decided_by: String,
    /// AWS CLI commands that would make a failing hop pass.
    pub fix: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AwsExplanation {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub port: u16,
    pub src_interface: String,
    pub dst_interface: String,
    pub admitted: bool,
    pub hops: Vec<Hop>,
    pub notes: Vec<String>,
}

struct Walk<'a> {
    model: &'a Model,
    src_ip: IpAddr,
    dst_ip: IpAddr,
    src: &'a Interface,
    dst: &'a Interface,
    protocol: u8,
    port: u16,
    hops: Vec<Hop>,
    notes: Vec<String>,
}

fn host_net(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

/// What the rule generator plans for one observed connection: its `IpPermissions` entry and
/// its network ACL entries (inbound to the server, outbound replies).
fn generated(src: IpAddr, dst: IpAddr, protocol: u8, port: u16) -> Option<(Value, Vec<Value>)> {
    let format = sumun_flows::Format::from_header(
        "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes \
         start end action log-status tcp-flags",
    )
    .ok()?;
    let line = format!(
        "2 123456789012 eni-0 {src} {dst} 65535 {port} {protocol} 1 60 0 1 ACCEPT OK {}",
        if protocol == 6 { 2 } else { 0 }
    );
    let flow = format.parse(&line).ok()?;
    let observe = || {
        let mut o = Observed::new(Vec::new());
        o.add(&flow);
        o
    };
    let sg = output::aws_cli(&suggest::plan(observe(), suggest::DEFAULT_SG_LIMIT));
    let perm = sg.get(0)?.get("IpPermissions")?.get(0)?.clone();
    let nacl = output::nacl_aws_cli(&suggest::plan_nacl(observe(), suggest::DEFAULT_NACL_LIMIT));
    Some((perm, nacl.as_array()?.clone()))
}

fn cli_json(v: &Value) -> String {
    format!("'{}'", serde_json::to_string(v).unwrap_or_default())
}

impl Walk<'_> {
    fn push(&mut self, hop: &str, resource: &str, verdict: Verdict, decided_by: String) {
        self.hops.push(Hop {
            hop: hop.into(),
            resource: resource.into(),
            verdict,
            decided_by,
            fix: Vec::new(),
        });
    }

    fn fail(&mut self, hop: &str, resource: &str, decided_by: String, fix: Vec<String>) {
        self.hops.push(Hop {
            hop: hop.into(),
            resource: resource.into(),
            verdict: Verdict::Fail,
            decided_by,
            fix,
        });
    }

    /// Security groups of `iface`, ingress or egress, against `peer` (an address and the
    /// interface holding it).
    fn security_groups(&mut self, egress: bool) {
        let (iface, peer_ip, peer) = if egress {
            (self.src, self.dst_ip, self.dst)
        } else {
            (self.dst, self.src_ip, self.src)
        };
        let hop = if egress {
            "source SG egress"
        } else {
            "destination SG ingress"
        };
        let ids: Vec<&str> = iface.groups.iter().map(|g| g.group_id.as_str()).collect();
        let resource = ids.join(",");
        let mut decided = None;
        let mut unresolved = Vec::new();
        let mut missing = Vec::new();
        'groups: for id in &ids {
            let Some(group) = self.model.groups.iter().find(|g| g.group_id == *id) else {
                missing.push(id.to_string());
                continue;
            };
            let perms = if egress {
                &group.ip_permissions_egress
            } else {
                &group.ip_permissions
            };
            for p in perms {
                if !protocol_matches(&p.ip_protocol, self.protocol) {
                    continue;
                }
                let (from, to) = (p.from_port.unwrap_or(-1), p.to_port.unwrap_or(-1));
                if has_ports(self.protocol)
                    && p.ip_protocol != "-1"
                    && !(from <= i64::from(self.port) && i64::from(self.port) <= to)
                {
                    continue;
                }
                let what = if p.ip_protocol == "-1" {
                    format!("{} all traffic", group.group_id)
                } else {
                    format!(
                        "{} {} {}",
                        group.group_id,
                        suggest::protocol_name(self.protocol),
                        ports_text(self.protocol, from, to)
                    )
                };
                let dir = if egress { "to" } else { "from" };
                let desc =
                    |d: &Option<String>| d.as_ref().map(|d| format!(" ({d})")).unwrap_or_default();
                for r in &p.ip_ranges {
                    if r.cidr_ip
                        .parse::<IpNet>()
                        .is_ok_and(|n| n.contains(&peer_ip))
                    {
                        decided = Some(format!(
                            "{what} {dir} {}{}",
                            r.cidr_ip,
                            desc(&r.description)
                        ));
                        break 'groups;
                    }
                }
                for r in &p.ipv6_ranges {
                    if r.cidr_ipv6
                        .parse::<IpNet>()
                        .is_ok_and(|n| n.contains(&peer_ip))
                    {
                        decided = Some(format!(
                            "{what} {dir} {}{}",
                            r.cidr_ipv6,
                            desc(&r.description)
                        ));
                        break 'groups;
                    }
                }
                for pair in &p.user_id_group_pairs {
                    if peer.groups.iter().any(|g| g.group_id == pair.group_id) {
                        decided = Some(format!(
                            "{what} {dir} members of {}{}",
                            pair.group_id,
                            desc(&pair.description)
                        ));
                        if self.src.vpc_id != self.dst.vpc_id {
                            self.notes.push(format!(
                                "{} refers to {} across VPCs ({} and {}): that works through a \
                                 peering in one region, or a transit gateway with security group \
                                 referencing support on",
                                group.group_id, pair.group_id, self.src.vpc_id, self.dst.vpc_id
                            ));
                        }
                        break 'groups;
                    }
                }
                for pl in &p.prefix_list_ids {
                    unresolved.push(format!("{} ({})", pl.prefix_list_id, group.group_id));
                }
            }
        }
        for m in &missing {
            self.notes.push(format!(
                "security group {m} of {} is not in describe-security-groups.json",
                iface.network_interface_id
            ));
        }
        if !unresolved.is_empty() && decided.is_none() {
            self.notes.push(format!(
                "prefix lists not resolved (their entries are not in the dumps): {}",
                unresolved.join(", ")
            ));
        }
        match decided {
            Some(rule) => self.push(hop, &resource, Verdict::Pass, rule),
            None => {
                let mut fix = Vec::new();
                if let (Some(group), Some((mut perm, _))) = (
                    ids.first(),
                    generated(self.src_ip, self.dst_ip, self.protocol, self.port),
                ) {
                    // The generator plans ingress; egress is its mirror, to the server.
                    let key = if peer_ip.is_ipv4() {
                        "IpRanges"
                    } else {
                        "Ipv6Ranges"
                    };
                    let cidr_key = if peer_ip.is_ipv4() {
                        "CidrIp"
                    } else {
                        "CidrIpv6"
                    };
                    perm[key][0][cidr_key] = json!(host_net(peer_ip).to_string());
                    perm[key][0]["Description"] = json!(format!(
                        "sumun flows explain: {} to {}",
                        self.src_ip, self.dst_ip
                    ));
                    let cmd = if egress {
                        "authorize-security-group-egress"
                    } else {
                        "authorize-security-group-ingress"
                    };
                    fix.push(format!(
                        "aws ec2 {cmd} --group-id {group} --ip-permissions {}",
                        cli_json(&Value::Array(vec![perm]))
                    ));
                }
                let why = if ids.is_empty() {
                    format!("{} has no security group", iface.network_interface_id)
                } else {
                    format!(
                        "no {} rule allows {} {} {} {}",
                        if egress { "outbound" } else { "inbound" },
                        suggest::protocol_name(self.protocol),
                        ports_text(self.protocol, i64::from(self.port), i64::from(self.port)),
                        if egress { "to" } else { "from" },
                        peer_ip
                    )
                };
                self.fail(hop, &resource, why, fix);
            }
        }
    }

    /// One direction of one ACL for traffic to or from `peer` on `ports`, first match by rule
    /// number; `reply` marks the return path (for the fix).
    fn acl(
        &mut self,
        hop: &str,
        on_src: bool,
        egress: bool,
        peer: IpAddr,
        ports: (u16, u16),
        reply: bool,
    ) {
        let iface = if on_src { self.src } else { self.dst };
        if self.src.subnet_id == self.dst.subnet_id {
            self.push(
                hop,
                &iface.subnet_id,
                Verdict::Skip,
                "same subnet: network ACLs are not evaluated".into(),
            );
            return;
        }
        let Some(acl) = self.model.acl_of(&iface.subnet_id) else {
            self.fail(
                hop,
                &iface.subnet_id,
                format!(
                    "no network ACL associated with {} in describe-network-acls.json",
                    iface.subnet_id
                ),
                Vec::new(),
            );
            return;
        };
        let mut entries: Vec<&AclEntry> =
            acl.entries.iter().filter(|e| e.egress == egress).collect();
        entries.sort_by_key(|e| e.rule_number);
        // Port segments still undecided, and the decided ones with their entry.
        let mut open = vec![ports];
        let mut decided: Vec<((u16, u16), &AclEntry)> = Vec::new();
        for e in &entries {
            let net = e
                .cidr_block
                .as_deref()
                .or(e.ipv6_cidr_block.as_deref())
                .and_then(|c| c.parse::<IpNet>().ok());
            if !net.is_some_and(|n| n.contains(&peer))
                || !protocol_matches(&e.protocol, self.protocol)
            {
                continue;
            }
            let range = match (
                &e.port_range,
                has_ports(self.protocol) && e.protocol != "-1",
            ) {
                (Some(r), true) => (r.from.clamp(0, 65535) as u16, r.to.clamp(0, 65535) as u16),
                _ => (0, 65535),
            };
            let mut rest = Vec::new();
            for (a, b) in open {
                let (lo, hi) = (a.max(range.0), b.min(range.1));
                if lo > hi {
                    rest.push((a, b));
                    continue;
                }
                decided.push(((lo, hi), e));
                if a < lo {
                    rest.push((a, lo - 1));
                }
                if hi < b {
                    rest.push((hi + 1, b));
                }
            }
            open = rest;
            if open.is_empty() {
                break;
            }
        }
        decided.sort_by_key(|(r, _)| *r);
        let describe = |e: &AclEntry| {
            let number = if e.rule_number == DEFAULT_RULE {
                "*".to_string()
            } else {
                e.rule_number.to_string()
            };
            let (from, to) = e.port_range.as_ref().map_or((-1, -1), |r| (r.from, r.to));
            let what = if e.protocol == "-1" {
                "all traffic".to_string()
            } else {
                format!(
                    "{} {}",
                    parse_protocol(&e.protocol).map_or(e.protocol.clone(), suggest::protocol_name),
                    ports_text(self.protocol, from, to)
                )
            };
            format!(
                "rule {number} {} {what} {}",
                e.rule_action,
                e.cidr_block
                    .as_deref()
                    .or(e.ipv6_cidr_block.as_deref())
                    .unwrap_or("?")
            )
        };
        let seg_text = |(a, b): (u16, u16)| {
            if !has_ports(self.protocol) {
                String::new()
            } else if a == b {
                format!("port {a}: ")
            } else {
                format!("ports {a}-{b}: ")
            }
        };
        let denied: Vec<&((u16, u16), &AclEntry)> = decided
            .iter()
            .filter(|(_, e)| e.rule_action != "allow")
            .collect();
        if denied.is_empty() && open.is_empty() {
            let text = if decided.len() == 1 {
                describe(decided[0].1)
            } else {
                decided
                    .iter()
                    .map(|(r, e)| format!("{}{}", seg_text(*r), describe(e)))
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            self.push(hop, &acl.network_acl_id, Verdict::Pass, text);
            return;
        }
        let mut parts: Vec<String> = denied
            .iter()
            .map(|(r, e)| {
                let whole = *r == ports;
                format!(
                    "{}{}",
                    if whole { String::new() } else { seg_text(*r) },
                    describe(e)
                )
            })
            .collect();
        for r in &open {
            parts.push(format!("{}no entry matches (denied)", seg_text(*r)));
        }
        // The fix goes just before the first entry that denied.
        let first_deny = denied
            .iter()
            .map(|(_, e)| e.rule_number)
            .min()
            .unwrap_or(DEFAULT_RULE);
        if let Some((_, e)) = denied.iter().find(|(_, e)| e.rule_number != DEFAULT_RULE) {
            self.notes.push(format!(
                "{} denies with an explicit entry (rule {}): the fix overrides it, so make sure \
                 that deny is not meant",
                acl.network_acl_id, e.rule_number
            ));
        }
        let number = free_rule_number(&entries, first_deny);
        let mut fix = Vec::new();
        if let (Some(number), Some((_, generated))) = (
            number,
            generated(self.src_ip, self.dst_ip, self.protocol, self.port),
        ) {
            // The generator plans the server's ACL: entry 0 inbound from the client, entry 1
            // (when ports apply) outbound replies. The client's ACL is their mirror.
            let pick = if reply { 1 } else { 0 };
            if let Some(mut entry) = generated.get(pick).or(generated.first()).cloned() {
                entry["NetworkAclId"] = json!(acl.network_acl_id);
                entry["RuleNumber"] = json!(number);
                entry["Egress"] = json!(egress);
                let key = if peer.is_ipv4() {
                    "CidrBlock"
                } else {
                    "Ipv6CidrBlock"
                };
                entry[key] = json!(host_net(peer).to_string());
                if reply && has_ports(self.protocol) {
                    entry["PortRange"] = json!({"From": ports.0, "To": ports.1});
                }
                fix.push(format!(
                    "aws ec2 create-network-acl-entry --cli-input-json {}",
                    cli_json(&entry)
                ));
            }
        }
        self.fail(hop, &acl.network_acl_id, parts.join("; "), fix);
    }

    /// The route table of `from`'s subnet towards `to`, then the TGW route table if the route
    /// leads there. `back` names the return-path hops.
    fn routes(&mut self, back: bool) {
        let before = self.hops.len();
        self.route_hops(back);
        if self.hops.len() == before + 1 {
            let suffix = if back { " (return)" } else { "" };
            self.push(
                &format!("TGW route table{suffix}"),
                "-",
                Verdict::Skip,
                "not reached".into(),
            );
        }
    }

    fn route_hops(&mut self, back: bool) {
        let (from, to, to_ip) = if back {
            (self.dst, self.src, self.src_ip)
        } else {
            (self.src, self.dst, self.dst_ip)
        };
        let side = if back { "destination" } else { "source" };
        let suffix = if back { " (return)" } else { "" };
        let hop = format!("{side} route table{suffix}");
        let tgw_hop = format!("TGW route table{suffix}");
        let Some(table) = self.model.route_table_of(&from.subnet_id, &from.vpc_id) else {
            self.fail(
                &hop,
                &from.subnet_id,
                format!(
                    "no route table for {} (none associated, no main table of {}) in \
                     describe-route-tables.json",
                    from.subnet_id, from.vpc_id
                ),
                Vec::new(),
            );
            return;
        };
        let best = table
            .routes
            .iter()
            .filter_map(|r| route_net(r).map(|n| (n, r)))
            .filter(|(n, _)| n.contains(&to_ip))
            .max_by_key(|(n, _)| n.prefix_len());
        let to_cidr = self.model.vpc_cidr(&to.vpc_id, to_ip);
        let tgw_of_from = self
            .model
            .tgw_attachments
            .iter()
            .find(|a| a.resource_type == "vpc" && a.resource_id == from.vpc_id)
            .map(|a| a.transit_gateway_id.clone());
        let Some((net, route)) = best else {
            let mut fix = Vec::new();
            if let (Some(cidr), Some(tgw)) = (to_cidr, tgw_of_from.as_ref()) {
                fix.push(format!(
                    "aws ec2 create-route --route-table-id {} --destination-cidr-block {cidr} \
                     --transit-gateway-id {tgw}",
                    table.route_table_id
                ));
            }
            self.fail(
                &hop,
                &table.route_table_id,
                format!("no route to {to_ip}"),
                fix,
            );
            return;
        };
        let target = route_target(route);
        let text = format!("{net} -> {target} ({})", route.state);
        if route.state != "active" {
            let mut fix = Vec::new();
            if let (Some(tgw), true) = (tgw_of_from.as_ref(), route.state == "blackhole") {
                fix.push(format!(
                    "aws ec2 replace-route --route-table-id {} --destination-cidr-block {net} \
                     --transit-gateway-id {tgw}",
                    table.route_table_id
                ));
            }
            self.fail(&hop, &table.route_table_id, text, fix);
            return;
        }
        if route.gateway_id.as_deref() == Some("local") {
            if from.vpc_id == to.vpc_id {
                self.push(&hop, &table.route_table_id, Verdict::Pass, text);
                self.push(&tgw_hop, "-", Verdict::Skip, "same VPC".into());
            } else {
                self.fail(
                    &hop,
                    &table.route_table_id,
                    format!(
                        "{text}: stays in {}, but {to_ip} is in {}",
                        from.vpc_id, to.vpc_id
                    ),
                    Vec::new(),
                );
            }
            return;
        }
        let Some(tgw) = route.transit_gateway_id.clone() else {
            self.fail(
                &hop,
                &table.route_table_id,
                format!("{text}: leaves towards {target}, not to {}", to.vpc_id),
                Vec::new(),
            );
            return;
        };
        self.push(&hop, &table.route_table_id, Verdict::Pass, text);
        self.tgw(&tgw_hop, &tgw, from, to, to_ip, to_cidr);
    }

    fn tgw(
        &mut self,
        hop: &str,
        tgw: &str,
        from: &Interface,
        to: &Interface,
        to_ip: IpAddr,
        to_cidr: Option<IpNet>,
    ) {
        let attachment = self.model.vpc_attachment(tgw, &from.vpc_id);
        let table_id = match attachment.and_then(|a| a.association.as_ref()) {
            Some(a) if a.state == "associated" || a.state.is_empty() => {
                Some(a.transit_gateway_route_table_id.clone())
            }
            _ if attachment.is_some() => None,
            _ => self
                .model
                .tgw_route_tables
                .iter()
                .find(|t| t.transit_gateway_id == tgw && t.default_association_route_table)
                .map(|t| t.transit_gateway_route_table_id.clone()),
        };
        let Some(table_id) = table_id else {
            let why = match attachment {
                Some(a) => format!(
                    "attachment {} of {} is associated with no route table",
                    a.transit_gateway_attachment_id, from.vpc_id
                ),
                None => format!(
                    "no attachment of {} to {tgw} in describe-transit-gateway-attachments.json, \
                     and no default association route table",
                    from.vpc_id
                ),
            };
            self.fail(hop, tgw, why, Vec::new());
            return;
        };
        let Some(routes) = self.model.tgw_routes.get(&table_id) else {
            self.fail(
                hop,
                &table_id,
                format!("routes unknown: no search-transit-gateway-routes/{table_id}.json"),
                Vec::new(),
            );
            return;
        };
        // Longest prefix; at equal length a static route wins over a propagated one.
        let best = routes
            .iter()
            .filter_map(|r| {
                r.destination_cidr_block
                    .as_deref()
                    .and_then(|c| c.parse::<IpNet>().ok())
                    .map(|n| (n, r))
            })
            .filter(|(n, _)| n.contains(&to_ip))
            .max_by_key(|(n, r)| (n.prefix_len(), r.kind == "static"));
        let to_attachment = self
            .model
            .vpc_attachment(tgw, &to.vpc_id)
            .map(|a| a.transit_gateway_attachment_id.clone());
        let fix_cmd = |verb: &str, cidr: String| -> Vec<String> {
            to_attachment
                .as_ref()
                .map(|att| {
                    vec![format!(
                        "aws ec2 {verb}-transit-gateway-route --transit-gateway-route-table-id \
                         {table_id} --destination-cidr-block {cidr} --transit-gateway-attachment-id {att}"
                    )]
                })
                .unwrap_or_default()
        };
        let Some((net, route)) = best else {
            let fix = to_cidr.map_or_else(Vec::new, |c| fix_cmd("create", c.to_string()));
            self.fail(hop, &table_id, format!("no route to {to_ip}"), fix);
            return;
        };
        let via: Vec<String> = route
            .transit_gateway_attachments
            .iter()
            .map(|a| format!("{} ({})", a.transit_gateway_attachment_id, a.resource_id))
            .collect();
        let text = format!(
            "{net} -> {} ({}, {})",
            if via.is_empty() {
                "nothing".to_string()
            } else {
                via.join(", ")
            },
            route.kind,
            route.state
        );
        if route.state == "blackhole" {
            let verb = if route.kind == "static" {
                "replace"
            } else {
                "create"
            };
            let fix = fix_cmd(verb, net.to_string());
            self.fail(hop, &table_id, text, fix);
            return;
        }
        if route.state != "active" {
            self.fail(hop, &table_id, text, Vec::new());
            return;
        }
        if !route
            .transit_gateway_attachments
            .iter()
            .any(|a| a.resource_id == to.vpc_id)
        {
            let fix = to_cidr.map_or_else(Vec::new, |c| {
                if c.prefix_len() > net.prefix_len() {
                    fix_cmd("create", c.to_string())
                } else {
                    fix_cmd("replace", net.to_string())
                }
            });
            self.fail(hop, &table_id, format!("{text}: not to {}", to.vpc_id), fix);
            return;
        }
        self.push(hop, &table_id, Verdict::Pass, text);
    }
}

/// A free rule number below `before` in one direction of an ACL: the next multiple of ten
/// after the entries when `before` is the final `*` entry, else the highest free number below
/// `before`.
fn free_rule_number(entries: &[&AclEntry], before: i64) -> Option<i64> {
    let used: std::collections::BTreeSet<i64> = entries.iter().map(|e| e.rule_number).collect();
    if before >= DEFAULT_RULE {
        let top = entries
            .iter()
            .map(|e| e.rule_number)
            .filter(|&n| n < DEFAULT_RULE)
            .max()
            .unwrap_or(0);
        let n = (top / 10 + 1) * 10;
        if n < DEFAULT_RULE {
            return Some(n);
        }
    }
    (1..before.min(DEFAULT_RULE))
        .rev()
        .find(|n| !used.contains(n))
}

/// Walks SRC → DST:PORT over the model and back; every hop is reported, failing or not.
pub fn explain(
    model: &Model,
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    port: u16,
) -> Result<AwsExplanation, AwsError> {
    let find = |ip: IpAddr, what: &str| {
        model.interface(ip).ok_or_else(|| {
            AwsError::Model(format!(
                "{what} {ip} is not an address of any interface in describe-network-interfaces.json"
            ))
        })
    };
    let src_if = find(src, "source")?;
    let dst_if = find(dst, "destination")?;
    let mut w = Walk {
        model,
        src_ip: src,
        dst_ip: dst,
        src: src_if,
        dst: dst_if,
        protocol,
        port,
        hops: Vec::new(),
        notes: Vec::new(),
    };
    let forward = (port, port);
    // Replies go to the client's ephemeral port; without ports, the same entries as forward.
    let reply = if has_ports(protocol) {
        EPHEMERAL
    } else {
        forward
    };
    w.security_groups(true);
    w.acl("source NACL outbound", true, true, dst, forward, false);
    w.routes(false);
    w.acl(
        "destination NACL inbound",
        false,
        false,
        src,
        forward,
        false,
    );
    w.security_groups(false);
    w.acl(
        "destination NACL outbound (return)",
        false,
        true,
        src,
        reply,
        true,
    );
    w.routes(true);
    w.acl(
        "source NACL inbound (return)",
        true,
        false,
        dst,
        reply,
        true,
    );
    if has_ports(protocol) {
        w.notes.push(format!(
            "replies are checked on ports {}-{} (the client's ephemeral port is not known)",
            EPHEMERAL.0, EPHEMERAL.1
        ));
    }
    let admitted = w.hops.iter().all(|h| h.verdict != Verdict::Fail);
    Ok(AwsExplanation {
        src,
        dst,
        protocol,
        port,
        src_interface: format!(
            "{} ({}, {})",
            src_if.network_interface_id, src_if.subnet_id, src_if.vpc_id
        ),
        dst_interface: format!(
            "{} ({}, {})",
            dst_if.network_interface_id, dst_if.subnet_id, dst_if.vpc_id
        ),
        admitted,
        hops: w.hops,
        notes: w.notes,
    })
}

/// The explanation as text: a table of hops, then each failure with its fix.
pub fn text(ex: &AwsExplanation) -> String {
    let mut out = String::new();
    let target = format!(
        "{} -> {} {} {}",
        ex.src,
        ex.dst,
        suggest::protocol_name(ex.protocol),
        ex.port
    );
    let failures = ex
        .hops
        .iter()
        .filter(|h| h.verdict == Verdict::Fail)
        .count();
    if ex.admitted {
        let _ = writeln!(out, "admitted: {target}");
    } else {
        let _ = writeln!(
            out,
            "refused: {target} ({failures} failing hop{})",
            if failures == 1 { "" } else { "s" }
        );
    }
    let _ = writeln!(out, "  from {}", ex.src_interface);
    let _ = writeln!(out, "  to   {}\n", ex.dst_interface);
    let header = ["HOP", "RESOURCE", "VERDICT", "DECIDED BY"];
    let rows: Vec<[&str; 4]> = ex
        .hops
        .iter()
        .map(|h| {
            [
                h.hop.as_str(),
                h.resource.as_str(),
                h.verdict.as_str(),
                h.decided_by.as_str(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    for r in std::iter::once(&header).chain(rows.iter()) {
        let line = format!(
            "{:w0$}  {:w1$}  {:w2$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if failures > 0 {
        out.push_str("\nfailures:\n");
        for h in ex.hops.iter().filter(|h| h.verdict == Verdict::Fail) {
            let _ = writeln!(out, "  {} {}: {}", h.hop, h.resource, h.decided_by);
            if h.fix.is_empty() {
                out.push_str("    fix: none suggested (see the reason)\n");
            }
            for f in &h.fix {
                let _ = writeln!(out, "    fix: {f}");
            }
        }
    }
    for n in &ex.notes {
        let _ = writeln!(out, "note: {n}");
    }
    out
}
