//! A server's firewall: the pool masqueraded out of the egress interface, and what clients may
//! reach through the node — the internet and what the server offers them, nothing else.
//!
//! What the rules say, for traffic that arrives on the WireGuard interface:
//! - forwarded only out of the egress interface, and not to private (10/8, 172.16/12,
//!   192.168/16), CGNAT (100.64/10), link-local (169.254/16, fe80::/10), loopback (127/8, ::1)
//!   or unique-local (fc00::/7) destinations, nor to the CIDRs the server lists
//!   (`nat.blockedDestinations`): the node's LAN or VPC, the cluster's pod and Service networks
//!   and the cloud's metadata service stay out of reach even when they sit behind the egress
//!   interface;
//! - forwarded back into the interface (client to client) only when the server enables it
//!   (`nat.clientToClient`);
//! - delivered to the node itself only when it is an answer to the node's own traffic, a ping
//!   of the server's tunnel address, or DNS (UDP and TCP 53) on a tunnel address the server
//!   lists in `spec.dns` (the node serves it).
//!
//! Traffic forwarded into the interface from anywhere else is let in only as part of a
//! connection a client made. With `nat.enabled` off the agent writes no rules at all.
//!
//! How the rules sit beside the host's own, per firewall:
//! - **nftables**: a table of the agent's own (`inet wgsub_<interface>`, both families) with
//!   base chains on the forward, input and postrouting hooks. Every table's base chains see every
//!   packet: an `accept` only ends *this* table's verdict (another table may still drop the
//!   packet), a `drop` is final everywhere. So the agent's drops hold whatever the host's tables
//!   say, and its accepts never override a drop of the host's.
//! - **iptables**: two chains of the agent's own per family, `WGSUB-FWD-<interface>` (jumped to
//!   from the top of `FORWARD` for packets into or out of the interface) and
//!   `WGSUB-IN-<interface>` (from the top of `INPUT` for packets from the interface). They end in
//!   `ACCEPT` only for what the rules above allow and `DROP` for everything else, so the host's
//!   later rules — kube-proxy's or flannel's ACCEPTs for the pod network among them — never see a
//!   client's packet, and a host whose `FORWARD` policy is DROP (Docker) still forwards it. The
//!   IPv6 rules exist when the server has an IPv6 pool (WireGuard drops a client's packets from
//!   any other source, so without one no IPv6 arrives from clients). A component that later
//!   inserts its own rules at the top of `FORWARD` or `INPUT` goes ahead of the jumps (the agent
//!   checks that they exist, not where); nftables has no such order.
//!
//! The rules are rendered purely and applied idempotently: nftables replaces the table in one
//! transaction; iptables replaces the contents of its chains in one `iptables-restore
//! --noflush` transaction, then deletes the tagged jump and masquerade rules (comment
//! `wgsub:<interface>`) that are no longer wanted and adds the missing ones. Opting out removes
//! the table, or the tagged rules and then the chains; IP forwarding, once turned on, is left on
//! because other workloads on the node may rely on it.

use std::io::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use wgsub_crds::WgServerSpec;
use wgsub_crds::pool::{server_address_v4, server_address_v6};

use crate::desired::Pools;

/// Which firewall the node uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Firewall {
    Nftables,
    Iptables,
}

/// IPv4 destinations clients never reach: private, CGNAT, loopback and link-local ranges.
pub const ALWAYS_BLOCKED_V4: [Ipv4Net; 6] = [
    net4(10, 0, 0, 0, 8),
    net4(100, 64, 0, 0, 10),
    net4(127, 0, 0, 0, 8),
    net4(169, 254, 0, 0, 16),
    net4(172, 16, 0, 0, 12),
    net4(192, 168, 0, 0, 16),
];

/// IPv6 destinations clients never reach: loopback, unique-local and link-local ranges.
pub const ALWAYS_BLOCKED_V6: [Ipv6Net; 3] = [
    net6(Ipv6Addr::LOCALHOST, 128),
    net6(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),
    net6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
];

const fn net4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Ipv4Net {
    match Ipv4Net::new(Ipv4Addr::new(a, b, c, d), prefix) {
        Ok(net) => net,
        Err(_) => panic!("a prefix length above 32"),
    }
}

const fn net6(address: Ipv6Addr, prefix: u8) -> Ipv6Net {
    match Ipv6Net::new(address, prefix) {
        Ok(net) => net,
        Err(_) => panic!("a prefix length above 128"),
    }
}

/// What one server's firewall consists of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatPlan {
    pub interface: String,
    pub pool4: Ipv4Net,
    pub pool6: Option<Ipv6Net>,
    /// The interface client traffic leaves through; empty until resolved from the default route.
    pub egress: String,
    /// Clients may reach each other through the interface.
    pub client_to_client: bool,
    /// Destinations refused beyond [`ALWAYS_BLOCKED_V4`] and [`ALWAYS_BLOCKED_V6`].
    pub blocked: Vec<IpNet>,
    /// The node answers DNS for clients: the server lists one of its tunnel addresses in
    /// `spec.dns`.
    pub dns: bool,
}

impl NatPlan {
    /// The plan of a server whose NAT is enabled (`None` when it is not), its egress interface
    /// empty when the spec leaves it to the default route. An entry of `blockedDestinations`
    /// that is not a CIDR is an error: leaving it out would let clients reach it.
    pub fn for_server(
        interface: &str,
        pools: Pools,
        spec: &WgServerSpec,
    ) -> Result<Option<NatPlan>, String> {
        let Some(nat) = spec.nat.as_ref().filter(|nat| nat.enabled) else {
            return Ok(None);
        };
        let blocked = nat
            .blocked_destinations
            .iter()
            .map(|text| {
                text.parse::<IpNet>()
                    .map(|net| net.trunc())
                    .map_err(|_| format!("nat.blockedDestinations: {text:?} is not a CIDR"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tunnel = tunnel_addresses(pools.v4, pools.v6);
        let dns = spec
            .dns
            .iter()
            .filter_map(|text| text.parse::<IpAddr>().ok())
            .any(|address| tunnel.contains(&address));
        Ok(Some(NatPlan {
            interface: interface.to_owned(),
            pool4: pools.v4,
            pool6: pools.v6,
            egress: nat.egress_interface.clone().unwrap_or_default(),
            client_to_client: nat.client_to_client,
            blocked,
            dns,
        }))
    }

    /// The server's own addresses on the interface: the first host of each pool.
    fn tunnel4(&self) -> Ipv4Addr {
        server_address_v4(self.pool4)
    }

    fn tunnel6(&self) -> Option<Ipv6Addr> {
        self.pool6.map(server_address_v6)
    }

    /// The IPv4 destinations clients may not reach, merged into non-overlapping networks.
    pub fn blocked_v4(&self) -> Vec<Ipv4Net> {
        let listed = self.blocked.iter().filter_map(|net| match net {
            IpNet::V4(net) => Some(*net),
            IpNet::V6(_) => None,
        });
        Ipv4Net::aggregate(&ALWAYS_BLOCKED_V4.into_iter().chain(listed).collect())
    }

    /// The IPv6 destinations clients may not reach, merged into non-overlapping networks.
    pub fn blocked_v6(&self) -> Vec<Ipv6Net> {
        let listed = self.blocked.iter().filter_map(|net| match net {
            IpNet::V6(net) => Some(*net),
            IpNet::V4(_) => None,
        });
        Ipv6Net::aggregate(&ALWAYS_BLOCKED_V6.into_iter().chain(listed).collect())
    }
}

fn tunnel_addresses(pool4: Ipv4Net, pool6: Option<Ipv6Net>) -> Vec<IpAddr> {
    let mut out = vec![IpAddr::V4(server_address_v4(pool4))];
    out.extend(pool6.map(|pool| IpAddr::V6(server_address_v6(pool))));
    out
}

/// The nftables table that holds a server's rules: `wgsub_<interface>` with characters nft
/// does not accept in names replaced by `_`.
pub fn table_name(interface: &str) -> String {
    let clean: String = interface
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("wgsub_{clean}")
}

/// The comment that tags a server's iptables jump and masquerade rules.
pub fn rule_comment(interface: &str) -> String {
    format!("wgsub:{interface}")
}

/// The iptables chain that decides what is forwarded into and out of the interface.
pub fn forward_chain(interface: &str) -> String {
    format!("WGSUB-FWD-{interface}")
}

/// The iptables chain that decides what from the interface reaches the node itself.
pub fn input_chain(interface: &str) -> String {
    format!("WGSUB-IN-{interface}")
}

fn join<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The nft script that replaces the server's table with the wanted rules in one transaction.
pub fn render_nft(plan: &NatPlan) -> String {
    let table = table_name(&plan.interface);
    let wg = &plan.interface;
    let egress = &plan.egress;
    let mut forward = String::new();
    let mut line = |text: String| {
        forward.push_str("    ");
        forward.push_str(&text);
        forward.push('\n');
    };
    if plan.client_to_client {
        line(format!("iifname \"{wg}\" oifname \"{wg}\" accept"));
    }
    line(format!(
        "oifname \"{wg}\" ct state established,related accept"
    ));
    line(format!("oifname \"{wg}\" drop"));
    line(format!("iifname \"{wg}\" oifname != \"{egress}\" drop"));
    line(format!(
        "iifname \"{wg}\" ip daddr {{ {} }} drop",
        join(&plan.blocked_v4())
    ));
    line(format!(
        "iifname \"{wg}\" ip6 daddr {{ {} }} drop",
        join(&plan.blocked_v6())
    ));
    let mut input = String::new();
    let mut line = |text: String| {
        input.push_str("    ");
        input.push_str(&text);
        input.push('\n');
    };
    line(format!(
        "iifname \"{wg}\" ct state established,related accept"
    ));
    let tunnel4 = plan.tunnel4();
    line(format!(
        "iifname \"{wg}\" ip daddr {tunnel4} icmp type echo-request accept"
    ));
    if let Some(tunnel6) = plan.tunnel6() {
        line(format!(
            "iifname \"{wg}\" ip6 daddr {tunnel6} icmpv6 type echo-request accept"
        ));
    }
    if plan.dns {
        for address in tunnel_addresses(plan.pool4, plan.pool6) {
            let family = if address.is_ipv4() { "ip" } else { "ip6" };
            for protocol in ["udp", "tcp"] {
                line(format!(
                    "iifname \"{wg}\" {family} daddr {address} {protocol} dport 53 accept"
                ));
            }
        }
    }
    line(format!("iifname \"{wg}\" drop"));
    let mut masquerade = format!(
        "    ip saddr {} oifname \"{egress}\" masquerade\n",
        plan.pool4
    );
    if let Some(pool6) = plan.pool6 {
        masquerade.push_str(&format!(
            "    ip6 saddr {pool6} oifname \"{egress}\" masquerade\n"
        ));
    }
    format!(
        "table inet {table}\n\
         delete table inet {table}\n\
         table inet {table} {{\n  \
           chain forward {{\n    \
             type filter hook forward priority filter; policy accept;\n\
         {forward}  \
           }}\n  \
           chain input {{\n    \
             type filter hook input priority filter; policy accept;\n\
         {input}  \
           }}\n  \
           chain postrouting {{\n    \
             type nat hook postrouting priority srcnat; policy accept;\n\
         {masquerade}  \
           }}\n\
         }}\n"
    )
}

/// The nft script that removes the server's table if it exists.
pub fn render_nft_removal(interface: &str) -> String {
    let table = table_name(interface);
    format!("table inet {table}\ndelete table inet {table}\n")
}

/// One iptables rule: which binary (v4 or v6), table, chain and the match/target arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IptablesRule {
    pub v6: bool,
    pub table: &'static str,
    pub chain: &'static str,
    pub args: Vec<String>,
}

impl IptablesRule {
    fn binary(&self) -> &'static str {
        binary(self.v6)
    }
}

fn binary(v6: bool) -> &'static str {
    if v6 { "ip6tables" } else { "iptables" }
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// The families a plan has iptables rules in: IPv4, and IPv6 with an IPv6 pool.
fn families(plan: &NatPlan) -> Vec<bool> {
    if plan.pool6.is_some() {
        vec![false, true]
    } else {
        vec![false]
    }
}

/// The tagged iptables rules of a plan in the built-in chains: the jumps into the server's
/// chains and the masquerade, per family.
pub fn iptables_rules(plan: &NatPlan) -> Vec<IptablesRule> {
    let tag = rule_comment(&plan.interface);
    let wg = &plan.interface;
    let forward = forward_chain(wg);
    let input = input_chain(wg);
    let mut rules = Vec::new();
    for v6 in families(plan) {
        let pool = if v6 {
            plan.pool6.map(|pool| pool.to_string()).unwrap_or_default()
        } else {
            plan.pool4.to_string()
        };
        let filter = |chain, text: String| IptablesRule {
            v6,
            table: "filter",
            chain,
            args: words(&text),
        };
        rules.push(filter(
            "FORWARD",
            format!("-i {wg} -m comment --comment {tag} -j {forward}"),
        ));
        rules.push(filter(
            "FORWARD",
            format!("-o {wg} -m comment --comment {tag} -j {forward}"),
        ));
        rules.push(filter(
            "INPUT",
            format!("-i {wg} -m comment --comment {tag} -j {input}"),
        ));
        rules.push(IptablesRule {
            v6,
            table: "nat",
            chain: "POSTROUTING",
            args: words(&format!(
                "-s {pool} -o {} -m comment --comment {tag} -j MASQUERADE",
                plan.egress
            )),
        });
    }
    rules
}

/// The `iptables-restore --noflush` input that (re)creates the server's two chains of one family
/// with their whole contents in one transaction (declaring a chain flushes it).
pub fn iptables_chains(plan: &NatPlan, v6: bool) -> String {
    let wg = &plan.interface;
    let forward = forward_chain(wg);
    let input = input_chain(wg);
    let mut out = format!("*filter\n:{forward} - [0:0]\n:{input} - [0:0]\n");
    let mut add = |chain: &str, text: String| out.push_str(&format!("-A {chain} {text}\n"));
    if plan.client_to_client {
        add(&forward, format!("-i {wg} -o {wg} -j ACCEPT"));
    }
    add(
        &forward,
        format!("-o {wg} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
    );
    add(&forward, format!("-o {wg} -j DROP"));
    add(&forward, format!("! -o {} -j DROP", plan.egress));
    let blocked: Vec<String> = if v6 {
        plan.blocked_v6().iter().map(ToString::to_string).collect()
    } else {
        plan.blocked_v4().iter().map(ToString::to_string).collect()
    };
    for net in blocked {
        add(&forward, format!("-d {net} -j DROP"));
    }
    add(&forward, "-j ACCEPT".into());
    add(
        &input,
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".into(),
    );
    let (tunnel, ping) = if v6 {
        let tunnel = plan
            .tunnel6()
            .map(|a| format!("{a}/128"))
            .unwrap_or_default();
        (tunnel, "-p ipv6-icmp --icmpv6-type echo-request")
    } else {
        (
            format!("{}/32", plan.tunnel4()),
            "-p icmp --icmp-type echo-request",
        )
    };
    add(&input, format!("-d {tunnel} {ping} -j ACCEPT"));
    if plan.dns {
        for protocol in ["udp", "tcp"] {
            add(
                &input,
                format!("-d {tunnel} -p {protocol} --dport 53 -j ACCEPT"),
            );
        }
    }
    add(&input, "-j DROP".into());
    out.push_str("COMMIT\n");
    out
}

/// The tagged rules found in `iptables -S <chain>` output (`-A CHAIN args…` lines). The listing
/// is shell-quoted (`--comment "wgsub:wg0"`), so each line is split as a shell would split it;
/// a line that does not split (unbalanced quotes) is not ours.
pub fn tagged_rules_in(
    listing: &str,
    v6: bool,
    table: &'static str,
    chain: &'static str,
    interface: &str,
) -> Vec<IptablesRule> {
    let tag = rule_comment(interface);
    let prefix = format!("-A {chain} ");
    listing
        .lines()
        .filter_map(|line| shlex::split(line.strip_prefix(&prefix)?))
        .filter(|args| args.contains(&tag))
        .map(|args| IptablesRule {
            v6,
            table,
            chain,
            args,
        })
        .collect()
}

/// Which tagged rules to delete and which wanted rules to add.
pub fn iptables_changes(
    existing: &[IptablesRule],
    wanted: &[IptablesRule],
) -> (Vec<IptablesRule>, Vec<IptablesRule>) {
    let delete = existing
        .iter()
        .filter(|rule| !wanted.contains(rule))
        .cloned()
        .collect();
    let add = wanted
        .iter()
        .filter(|rule| !existing.contains(rule))
        .cloned()
        .collect();
    (delete, add)
}

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> io::Result<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("{program}: {e}")))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(io::Error::other(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// The firewall to use: nftables when `nft` works here, iptables otherwise.
pub fn detect_firewall() -> Firewall {
    if run("nft", &["list", "tables"], None).is_ok() {
        Firewall::Nftables
    } else {
        Firewall::Iptables
    }
}

/// The interface of the IPv4 default route.
pub fn default_route_interface() -> io::Result<String> {
    let out = run("ip", &["-j", "route", "show", "default"], None)?;
    let routes: serde_json::Value = serde_json::from_str(&out)
        .map_err(|e| io::Error::other(format!("ip route output: {e}")))?;
    routes
        .as_array()
        .and_then(|routes| routes.iter().find_map(|r| r.get("dev")?.as_str()))
        .map(str::to_owned)
        .ok_or_else(|| {
            io::Error::other("there is no default route to take the egress interface from")
        })
}

fn enable_forwarding(v6: bool) -> io::Result<()> {
    ensure_sysctl_on("/proc/sys/net/ipv4/ip_forward")?;
    if v6 {
        ensure_sysctl_on("/proc/sys/net/ipv6/conf/all/forwarding")?;
    }
    Ok(())
}

/// Turns a boolean sysctl on, writing only when it is off: `/proc/sys` is read-only in an
/// unprivileged container, and nodes (k3s, kube-proxy) usually have forwarding on already.
fn ensure_sysctl_on(path: &str) -> io::Result<()> {
    if std::fs::read_to_string(path)?.trim() == "1" {
        return Ok(());
    }
    std::fs::write(path, "1\n").map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{path} is 0 and cannot be set ({e}); enable IP forwarding on the node"),
        )
    })
}

/// The tagged rules of one family in the built-in chains the agent adds to.
fn iptables_existing(interface: &str, v6: bool) -> io::Result<Vec<IptablesRule>> {
    let mut out = Vec::new();
    for (table, chain) in [
        ("filter", "FORWARD"),
        ("filter", "INPUT"),
        ("nat", "POSTROUTING"),
    ] {
        let listing = run(binary(v6), &["-w", "-t", table, "-S", chain], None)?;
        out.extend(tagged_rules_in(&listing, v6, table, chain, interface));
    }
    Ok(out)
}

fn iptables_edit(rule: &IptablesRule, action: &[&str]) -> io::Result<()> {
    let mut args: Vec<&str> = vec!["-w", "-t", rule.table];
    args.extend_from_slice(action);
    args.extend(rule.args.iter().map(String::as_str));
    run(rule.binary(), &args, None).map(drop)
}

/// One family's chains filled first (so no jump ever leads to an empty chain), then the tagged
/// rules made to match the plan.
fn iptables_apply_family(plan: &NatPlan, v6: bool) -> io::Result<()> {
    let restore = if v6 {
        "ip6tables-restore"
    } else {
        "iptables-restore"
    };
    run(
        restore,
        &["-w", "--noflush"],
        Some(&iptables_chains(plan, v6)),
    )?;
    let wanted: Vec<IptablesRule> = iptables_rules(plan)
        .into_iter()
        .filter(|rule| rule.v6 == v6)
        .collect();
    let existing = iptables_existing(&plan.interface, v6)?;
    let (delete, add) = iptables_changes(&existing, &wanted);
    for rule in &delete {
        iptables_edit(rule, &["-D", rule.chain])?;
    }
    for rule in &add {
        iptables_edit(rule, &["-I", rule.chain, "1"])?;
    }
    Ok(())
}

/// One family's tagged rules deleted, then its chains (nothing jumps to them any more).
/// `ip6tables` may be absent on IPv4-only nodes: when it cannot list, there is nothing to remove.
fn iptables_remove_family(interface: &str, v6: bool) -> io::Result<()> {
    let existing = match iptables_existing(interface, v6) {
        Ok(existing) => existing,
        Err(_) if v6 => return Ok(()),
        Err(error) => return Err(error),
    };
    for rule in &existing {
        iptables_edit(rule, &["-D", rule.chain])?;
    }
    let listing = run(binary(v6), &["-w", "-t", "filter", "-S"], None)?;
    for chain in [forward_chain(interface), input_chain(interface)] {
        if listing.lines().any(|line| line == format!("-N {chain}")) {
            run(binary(v6), &["-w", "-t", "filter", "-F", &chain], None)?;
            run(binary(v6), &["-w", "-t", "filter", "-X", &chain], None)?;
        }
    }
    Ok(())
}

/// Makes the firewall hold exactly the plan's rules (and turns IP forwarding on).
pub fn apply(firewall: Firewall, plan: &NatPlan) -> io::Result<()> {
    enable_forwarding(plan.pool6.is_some())?;
    match firewall {
        Firewall::Nftables => run("nft", &["-f", "-"], Some(&render_nft(plan))).map(drop),
        Firewall::Iptables => {
            iptables_apply_family(plan, false)?;
            if plan.pool6.is_some() {
                iptables_apply_family(plan, true)
            } else {
                // The pool lost its IPv6 half: its rules go.
                iptables_remove_family(&plan.interface, true)
            }
        }
    }
}

/// Removes the server's rules, if any.
pub fn remove(firewall: Firewall, interface: &str) -> io::Result<()> {
    match firewall {
        Firewall::Nftables => {
            run("nft", &["-f", "-"], Some(&render_nft_removal(interface))).map(drop)
        }
        Firewall::Iptables => {
            iptables_remove_family(interface, false)?;
            iptables_remove_family(interface, true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(pool6: bool) -> NatPlan {
        NatPlan {
            interface: "wg0".into(),
            pool4: "10.8.0.0/24".parse().unwrap(),
            pool6: pool6.then(|| "fd00:8::/64".parse().unwrap()),
            egress: "eth0".into(),
            client_to_client: false,
            blocked: Vec::new(),
            dns: false,
        }
    }

    fn spec(nat: serde_json::Value, dns: &[&str], pool6: bool) -> WgServerSpec {
        let mut spec = serde_json::json!({
            "endpoint": "vpn.example.com:51820",
            "addressPool": "10.8.0.0/24",
            "dns": dns,
            "privateKeySecretRef": {"name": "k", "key": "privateKey"},
            "nat": nat,
        });
        if pool6 {
            spec["addressPool6"] = "fd00:8::/64".into();
        }
        serde_json::from_value(spec).unwrap()
    }

    fn pools(pool6: bool) -> Pools {
        Pools {
            v4: "10.8.0.0/24".parse().unwrap(),
            v6: pool6.then(|| "fd00:8::/64".parse().unwrap()),
        }
    }

    #[test]
    fn nft_script_replaces_the_table_atomically_and_keeps_clients_to_the_internet() {
        let script = render_nft(&plan(true));
        let expected = "table inet wgsub_wg0\n\
            delete table inet wgsub_wg0\n\
            table inet wgsub_wg0 {\n  \
            chain forward {\n    \
            type filter hook forward priority filter; policy accept;\n    \
            oifname \"wg0\" ct state established,related accept\n    \
            oifname \"wg0\" drop\n    \
            iifname \"wg0\" oifname != \"eth0\" drop\n    \
            iifname \"wg0\" ip daddr { 10.0.0.0/8, 100.64.0.0/10, 127.0.0.0/8, 169.254.0.0/16, 172.16.0.0/12, 192.168.0.0/16 } drop\n    \
            iifname \"wg0\" ip6 daddr { ::1/128, fc00::/7, fe80::/10 } drop\n  \
            }\n  \
            chain input {\n    \
            type filter hook input priority filter; policy accept;\n    \
            iifname \"wg0\" ct state established,related accept\n    \
            iifname \"wg0\" ip daddr 10.8.0.1 icmp type echo-request accept\n    \
            iifname \"wg0\" ip6 daddr fd00:8::1 icmpv6 type echo-request accept\n    \
            iifname \"wg0\" drop\n  \
            }\n  \
            chain postrouting {\n    \
            type nat hook postrouting priority srcnat; policy accept;\n    \
            ip saddr 10.8.0.0/24 oifname \"eth0\" masquerade\n    \
            ip6 saddr fd00:8::/64 oifname \"eth0\" masquerade\n  \
            }\n\
            }\n";
        assert_eq!(script, expected);
    }

    #[test]
    fn nft_script_of_an_ipv4_only_pool_still_refuses_ipv6_destinations() {
        let script = render_nft(&plan(false));
        assert!(!script.contains("ip6 saddr"), "{script}");
        assert!(!script.contains("icmpv6"), "{script}");
        assert!(
            script.contains("iifname \"wg0\" ip6 daddr { ::1/128, fc00::/7, fe80::/10 } drop"),
            "{script}"
        );
        assert!(script.contains("    iifname \"wg0\" drop\n"), "{script}");
    }

    #[test]
    fn nft_client_to_client_is_accepted_before_anything_refuses_it() {
        let mut open = plan(true);
        open.client_to_client = true;
        let script = render_nft(&open);
        let accept = script
            .find("iifname \"wg0\" oifname \"wg0\" accept")
            .expect("client-to-client accept");
        let first_drop = script.find("drop").unwrap();
        assert!(accept < first_drop, "{script}");
        assert!(!render_nft(&plan(true)).contains("oifname \"wg0\" accept"));
    }

    #[test]
    fn nft_offers_dns_on_the_tunnel_addresses_only_when_the_server_serves_it() {
        let mut serving = plan(true);
        serving.dns = true;
        let script = render_nft(&serving);
        for rule in [
            "iifname \"wg0\" ip daddr 10.8.0.1 udp dport 53 accept",
            "iifname \"wg0\" ip daddr 10.8.0.1 tcp dport 53 accept",
            "iifname \"wg0\" ip6 daddr fd00:8::1 udp dport 53 accept",
            "iifname \"wg0\" ip6 daddr fd00:8::1 tcp dport 53 accept",
        ] {
            let at = script
                .find(rule)
                .unwrap_or_else(|| panic!("{rule}: {script}"));
            assert!(at < script.find("iifname \"wg0\" drop").unwrap());
        }
        assert!(!render_nft(&plan(true)).contains("dport 53"));
    }

    #[test]
    fn listed_destinations_join_the_always_blocked_ranges_merged_without_overlaps() {
        let mut listed = plan(true);
        listed.blocked = [
            "203.0.113.0/24",
            "10.96.0.0/12",
            "2001:db8::/32",
            "fd00:1::/64",
        ]
        .iter()
        .map(|c| c.parse().unwrap())
        .collect();
        let v4: Vec<String> = listed
            .blocked_v4()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            v4,
            [
                "10.0.0.0/8",
                "100.64.0.0/10",
                "127.0.0.0/8",
                "169.254.0.0/16",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "203.0.113.0/24"
            ]
        );
        let v6: Vec<String> = listed
            .blocked_v6()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(v6, ["::1/128", "2001:db8::/32", "fc00::/7", "fe80::/10"]);
        let script = render_nft(&listed);
        assert!(
            script.contains("192.168.0.0/16, 203.0.113.0/24 } drop"),
            "{script}"
        );
        assert!(
            script.contains("{ ::1/128, 2001:db8::/32, fc00::/7"),
            "{script}"
        );
    }

    #[test]
    fn the_plan_follows_the_server_spec() {
        let off = spec(serde_json::json!({"enabled": false}), &[], false);
        assert_eq!(NatPlan::for_server("wg0", pools(false), &off), Ok(None));
        let mut absent = off.clone();
        absent.nat = None;
        assert_eq!(NatPlan::for_server("wg0", pools(false), &absent), Ok(None));

        let defaults = spec(serde_json::json!({"enabled": true}), &["1.1.1.1"], false);
        let mut expected = plan(false);
        expected.egress = String::new();
        assert_eq!(
            NatPlan::for_server("wg0", pools(false), &defaults),
            Ok(Some(expected))
        );

        let all = spec(
            serde_json::json!({
                "enabled": true,
                "egressInterface": "eth1",
                "clientToClient": true,
                "blockedDestinations": ["203.0.113.0/24", "2001:db8::/32"],
            }),
            &["1.1.1.1"],
            true,
        );
        let made = NatPlan::for_server("wg0", pools(true), &all)
            .unwrap()
            .unwrap();
        assert_eq!(made.egress, "eth1");
        assert!(made.client_to_client);
        assert_eq!(
            made.blocked,
            vec![
                "203.0.113.0/24".parse::<IpNet>().unwrap(),
                "2001:db8::/32".parse().unwrap()
            ]
        );
        assert!(!made.dns);
    }

    #[test]
    fn the_node_serves_dns_when_the_server_lists_one_of_its_tunnel_addresses() {
        let on = serde_json::json!({"enabled": true});
        let dns = |servers: &[&str], pool6: bool| {
            NatPlan::for_server("wg0", pools(pool6), &spec(on.clone(), servers, pool6))
                .unwrap()
                .unwrap()
                .dns
        };
        assert!(dns(&["10.8.0.1"], false));
        assert!(dns(&["1.1.1.1", "fd00:8::1"], true));
        assert!(!dns(&["fd00:8::1"], false), "no IPv6 pool, no such address");
        assert!(!dns(&["10.8.0.2", "10.96.0.10", "1.1.1.1"], false));
        assert!(!dns(&[], false));
    }

    #[test]
    fn a_listed_destination_that_is_no_cidr_is_an_error_not_a_hole() {
        let mut bad = spec(serde_json::json!({"enabled": true}), &[], false);
        bad.nat.as_mut().unwrap().blocked_destinations = vec!["203.0.113.0/33".into()];
        let error = NatPlan::for_server("wg0", pools(false), &bad).unwrap_err();
        assert!(error.contains("203.0.113.0/33"), "{error}");
    }

    #[test]
    fn table_names_are_safe_for_nft() {
        assert_eq!(table_name("wg0"), "wgsub_wg0");
        assert_eq!(table_name("wg.a-b=c"), "wgsub_wg_a_b_c");
        assert_eq!(
            render_nft_removal("wg0"),
            "table inet wgsub_wg0\ndelete table inet wgsub_wg0\n"
        );
    }

    #[test]
    fn iptables_tagged_rules_jump_into_the_servers_chains_and_masquerade_per_family() {
        let rules: Vec<String> = iptables_rules(&plan(true))
            .iter()
            .map(|r| {
                format!(
                    "{} -t {} -A {} {}",
                    r.binary(),
                    r.table,
                    r.chain,
                    r.args.join(" ")
                )
            })
            .collect();
        let mut expected = Vec::new();
        for (binary, pool) in [("iptables", "10.8.0.0/24"), ("ip6tables", "fd00:8::/64")] {
            expected.extend([
                format!(
                    "{binary} -t filter -A FORWARD -i wg0 -m comment --comment wgsub:wg0 -j WGSUB-FWD-wg0"
                ),
                format!(
                    "{binary} -t filter -A FORWARD -o wg0 -m comment --comment wgsub:wg0 -j WGSUB-FWD-wg0"
                ),
                format!(
                    "{binary} -t filter -A INPUT -i wg0 -m comment --comment wgsub:wg0 -j WGSUB-IN-wg0"
                ),
                format!(
                    "{binary} -t nat -A POSTROUTING -s {pool} -o eth0 -m comment --comment wgsub:wg0 -j MASQUERADE"
                ),
            ]);
        }
        assert_eq!(rules, expected);
        assert_eq!(iptables_rules(&plan(false)).len(), 4);
        assert!(iptables_rules(&plan(false)).iter().all(|r| !r.v6));
    }

    #[test]
    fn iptables_chains_of_ipv4_accept_only_the_internet_and_the_offered_services() {
        let expected = "*filter\n\
            :WGSUB-FWD-wg0 - [0:0]\n\
            :WGSUB-IN-wg0 - [0:0]\n\
            -A WGSUB-FWD-wg0 -o wg0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
            -A WGSUB-FWD-wg0 -o wg0 -j DROP\n\
            -A WGSUB-FWD-wg0 ! -o eth0 -j DROP\n\
            -A WGSUB-FWD-wg0 -d 10.0.0.0/8 -j DROP\n\
            -A WGSUB-FWD-wg0 -d 100.64.0.0/10 -j DROP\n\
            -A WGSUB-FWD-wg0 -d 127.0.0.0/8 -j DROP\n\
            -A WGSUB-FWD-wg0 -d 169.254.0.0/16 -j DROP\n\
            -A WGSUB-FWD-wg0 -d 172.16.0.0/12 -j DROP\n\
            -A WGSUB-FWD-wg0 -d 192.168.0.0/16 -j DROP\n\
            -A WGSUB-FWD-wg0 -j ACCEPT\n\
            -A WGSUB-IN-wg0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
            -A WGSUB-IN-wg0 -d 10.8.0.1/32 -p icmp --icmp-type echo-request -j ACCEPT\n\
            -A WGSUB-IN-wg0 -j DROP\n\
            COMMIT\n";
        assert_eq!(iptables_chains(&plan(false), false), expected);
    }

    #[test]
    fn iptables_chains_of_ipv6_with_every_option_on() {
        let mut open = plan(true);
        open.client_to_client = true;
        open.dns = true;
        open.blocked = vec![
            "2001:db8::/32".parse().unwrap(),
            "203.0.113.0/24".parse().unwrap(),
        ];
        let expected = "*filter\n\
            :WGSUB-FWD-wg0 - [0:0]\n\
            :WGSUB-IN-wg0 - [0:0]\n\
            -A WGSUB-FWD-wg0 -i wg0 -o wg0 -j ACCEPT\n\
            -A WGSUB-FWD-wg0 -o wg0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
            -A WGSUB-FWD-wg0 -o wg0 -j DROP\n\
            -A WGSUB-FWD-wg0 ! -o eth0 -j DROP\n\
            -A WGSUB-FWD-wg0 -d ::1/128 -j DROP\n\
            -A WGSUB-FWD-wg0 -d 2001:db8::/32 -j DROP\n\
            -A WGSUB-FWD-wg0 -d fc00::/7 -j DROP\n\
            -A WGSUB-FWD-wg0 -d fe80::/10 -j DROP\n\
            -A WGSUB-FWD-wg0 -j ACCEPT\n\
            -A WGSUB-IN-wg0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
            -A WGSUB-IN-wg0 -d fd00:8::1/128 -p ipv6-icmp --icmpv6-type echo-request -j ACCEPT\n\
            -A WGSUB-IN-wg0 -d fd00:8::1/128 -p udp --dport 53 -j ACCEPT\n\
            -A WGSUB-IN-wg0 -d fd00:8::1/128 -p tcp --dport 53 -j ACCEPT\n\
            -A WGSUB-IN-wg0 -j DROP\n\
            COMMIT\n";
        assert_eq!(iptables_chains(&open, true), expected);
        let v4 = iptables_chains(&open, false);
        assert!(
            v4.contains("-A WGSUB-FWD-wg0 -d 203.0.113.0/24 -j DROP\n"),
            "{v4}"
        );
        assert!(v4.contains("-A WGSUB-IN-wg0 -d 10.8.0.1/32 -p udp --dport 53 -j ACCEPT\n"));
        assert!(!v4.contains("2001:db8"), "{v4}");
    }

    #[test]
    fn listing_parses_only_our_tagged_rules_with_the_comment_quoted_as_iptables_prints_it() {
        let listing = "-P POSTROUTING ACCEPT\n\
            -A POSTROUTING -s 10.8.0.0/24 -o eth0 -m comment --comment \"wgsub:wg0\" -j MASQUERADE\n\
            -A POSTROUTING -s 10.9.0.0/24 -o eth0 -m comment --comment \"wgsub:wg1\" -j MASQUERADE\n\
            -A POSTROUTING -s 10.7.0.0/24 -m comment --comment \"not wgsub:wg0\" -j MASQUERADE\n\
            -A POSTROUTING -m comment --comment \"unbalanced -j MASQUERADE\n\
            -A POSTROUTING -o eth0 -j MASQUERADE\n";
        let found = tagged_rules_in(listing, false, "nat", "POSTROUTING", "wg0");
        assert_eq!(found, vec![iptables_rules(&plan(false))[3].clone()]);
        let (delete, add) = iptables_changes(&found, &iptables_rules(&plan(false))[3..]);
        assert!(
            delete.is_empty() && add.is_empty(),
            "a listed rule is not re-added"
        );
    }

    #[test]
    fn iptables_changes_are_idempotent_and_replace_stale_rules() {
        let wanted = iptables_rules(&plan(false));
        assert_eq!(iptables_changes(&wanted, &wanted), (vec![], vec![]));
        let mut old_plan = plan(false);
        old_plan.egress = "eth1".into();
        let existing = iptables_rules(&old_plan);
        let (delete, add) = iptables_changes(&existing, &wanted);
        assert_eq!(delete, vec![existing[3].clone()]);
        assert_eq!(add, vec![wanted[3].clone()]);
        let (delete, add) = iptables_changes(&[], &wanted);
        assert!(delete.is_empty());
        assert_eq!(add, wanted);
    }

    #[test]
    fn the_accept_everything_rule_of_earlier_versions_is_deleted() {
        let earlier = IptablesRule {
            v6: false,
            table: "filter",
            chain: "FORWARD",
            args: words("-i wg0 -m comment --comment wgsub:wg0 -j ACCEPT"),
        };
        let wanted = iptables_rules(&plan(false));
        let (delete, _) = iptables_changes(std::slice::from_ref(&earlier), &wanted);
        assert_eq!(delete, vec![earlier]);
    }
}
