//! NAT for a server's pool: forwarding accepted to and from the WireGuard interface and the pool
//! masqueraded out of the egress interface. The rules are rendered purely (an nftables table of
//! its own, or iptables rules tagged with a comment) and applied idempotently: nftables replaces
//! the table in one transaction, iptables deletes tagged rules that are no longer wanted and adds
//! the missing ones. Opting out removes the table or the tagged rules; IP forwarding, once turned
//! on, is left on because other workloads on the node may rely on it.

use std::io::{self, Write as _};
use std::process::{Command, Stdio};

use ipnet::{Ipv4Net, Ipv6Net};

/// Which firewall the node uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Firewall {
    Nftables,
    Iptables,
}

/// What one server's NAT consists of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatPlan {
    pub interface: String,
    pub pool4: Ipv4Net,
    pub pool6: Option<Ipv6Net>,
    pub egress: String,
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

/// The comment that tags a server's iptables rules.
pub fn rule_comment(interface: &str) -> String {
    format!("wgsub:{interface}")
}

/// The nft script that replaces the server's table with the wanted rules in one transaction.
pub fn render_nft(plan: &NatPlan) -> String {
    let table = table_name(&plan.interface);
    let wg = &plan.interface;
    let egress = &plan.egress;
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
             type filter hook forward priority filter; policy accept;\n    \
             iifname \"{wg}\" accept\n    \
             oifname \"{wg}\" ct state related,established accept\n  \
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
        if self.v6 { "ip6tables" } else { "iptables" }
    }
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// The iptables rules of a plan, each tagged with the server's comment.
pub fn iptables_rules(plan: &NatPlan) -> Vec<IptablesRule> {
    let tag = rule_comment(&plan.interface);
    let wg = &plan.interface;
    let mut families = vec![(false, plan.pool4.to_string())];
    if let Some(pool6) = plan.pool6 {
        families.push((true, pool6.to_string()));
    }
    let mut rules = Vec::new();
    for (v6, pool) in families {
        rules.push(IptablesRule {
            v6,
            table: "filter",
            chain: "FORWARD",
            args: words(&format!("-i {wg} -m comment --comment {tag} -j ACCEPT")),
        });
        rules.push(IptablesRule {
            v6,
            table: "filter",
            chain: "FORWARD",
            args: words(&format!(
                "-o {wg} -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment {tag} -j ACCEPT"
            )),
        });
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

fn iptables_existing(interface: &str, v6: bool) -> io::Result<Vec<IptablesRule>> {
    let binary = if v6 { "ip6tables" } else { "iptables" };
    let mut out = Vec::new();
    for (table, chain) in [("filter", "FORWARD"), ("nat", "POSTROUTING")] {
        let listing = run(binary, &["-w", "-t", table, "-S", chain], None)?;
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

/// Makes the firewall hold exactly the plan's rules (and turns IP forwarding on).
pub fn apply(firewall: Firewall, plan: &NatPlan) -> io::Result<()> {
    enable_forwarding(plan.pool6.is_some())?;
    match firewall {
        Firewall::Nftables => run("nft", &["-f", "-"], Some(&render_nft(plan))).map(drop),
        Firewall::Iptables => {
            let wanted = iptables_rules(plan);
            let mut existing = iptables_existing(&plan.interface, false)?;
            if plan.pool6.is_some() {
                existing.extend(iptables_existing(&plan.interface, true)?);
            }
            let (delete, add) = iptables_changes(&existing, &wanted);
            for rule in &delete {
                iptables_edit(rule, &["-D", rule.chain])?;
            }
            for rule in &add {
                iptables_edit(rule, &["-I", rule.chain, "1"])?;
            }
            Ok(())
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
            let mut existing = iptables_existing(interface, false)?;
            // ip6tables may be absent on IPv4-only nodes; then there is nothing to remove there.
            existing.extend(iptables_existing(interface, true).unwrap_or_default());
            for rule in &existing {
                iptables_edit(rule, &["-D", rule.chain])?;
            }
            Ok(())
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
        }
    }

    #[test]
    fn nft_script_replaces_the_table_atomically_and_masquerades_the_pools() {
        let script = render_nft(&plan(true));
        let expected = "table inet wgsub_wg0\n\
            delete table inet wgsub_wg0\n\
            table inet wgsub_wg0 {\n  \
            chain forward {\n    \
            type filter hook forward priority filter; policy accept;\n    \
            iifname \"wg0\" accept\n    \
            oifname \"wg0\" ct state related,established accept\n  \
            }\n  \
            chain postrouting {\n    \
            type nat hook postrouting priority srcnat; policy accept;\n    \
            ip saddr 10.8.0.0/24 oifname \"eth0\" masquerade\n    \
            ip6 saddr fd00:8::/64 oifname \"eth0\" masquerade\n  \
            }\n\
            }\n";
        assert_eq!(script, expected);
        assert!(!render_nft(&plan(false)).contains("ip6"));
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
    fn iptables_rules_are_tagged_and_cover_both_families() {
        let rules = iptables_rules(&plan(true));
        assert_eq!(rules.len(), 6);
        assert!(
            rules
                .iter()
                .all(|r| r.args.contains(&"wgsub:wg0".to_string()))
        );
        let nat: Vec<_> = rules.iter().filter(|r| r.table == "nat").collect();
        assert_eq!(nat.len(), 2);
        assert_eq!(
            nat[0].args.join(" "),
            "-s 10.8.0.0/24 -o eth0 -m comment --comment wgsub:wg0 -j MASQUERADE"
        );
        assert!(nat[1].v6 && nat[1].args.join(" ").contains("fd00:8::/64"));
        assert_eq!(iptables_rules(&plan(false)).len(), 3);
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
        assert_eq!(found, vec![iptables_rules(&plan(false))[2].clone()]);
        let (delete, add) = iptables_changes(&found, &iptables_rules(&plan(false))[2..]);
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
        assert_eq!(delete, vec![existing[2].clone()]);
        assert_eq!(add, vec![wanted[2].clone()]);
        let (delete, add) = iptables_changes(&[], &wanted);
        assert!(delete.is_empty());
        assert_eq!(add, wanted);
    }
}
