//! One nftables rule on a namespace's input hook, in table `inet ntbench` (the
//! table goes with the namespace), and the rule's own packet counter.

use anyhow::Context as _;

use crate::netns::Netns;

/// Adds `rule` (e.g. `udp dport 7777 counter drop`) to a new input chain of `ns`.
/// nft 1.0.6 rejects a whole table on one line: table, chain, rule go one by one.
pub fn add_input_rule(ns: &Netns, rule: &str) -> anyhow::Result<()> {
    ns.exec("nft", &["add table inet ntbench"])?;
    ns.exec(
        "nft",
        &["add chain inet ntbench input { type filter hook input priority 0; }"],
    )?;
    ns.exec("nft", &[&format!("add rule inet ntbench input {rule}")])?;
    Ok(())
}

/// Packets the first `counter` of `ns`'s `ntbench` input chain has counted.
pub fn counted_packets(ns: &Netns) -> anyhow::Result<u64> {
    let text = ns.exec("nft", &["list chain inet ntbench input"])?;
    parse_counter(&text).context("no `counter packets N` in the ntbench chain")
}

fn parse_counter(text: &str) -> Option<u64> {
    let rest = &text[text.find("counter packets ")? + "counter packets ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn counter_from_a_listed_chain() {
        let text = "table inet ntbench {\n\tchain input {\n\t\ttype filter hook input \
                    priority filter; policy accept;\n\t\tudp dport 7777 counter packets 4242 \
                    bytes 123 drop\n\t}\n}\n";
        assert_eq!(super::parse_counter(text), Some(4242));
    }
}
