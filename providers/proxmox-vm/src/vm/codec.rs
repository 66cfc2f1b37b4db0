//! Proxmox's config strings: values as text, tags, disk sizes, `netN`,
//! `ipconfigN`, the marker in the notes.

use super::*;

/// A VM's configuration as `GET .../config` answers it.
pub(super) type Config = Map<String, Value>;

/// A config value as text (Proxmox answers numbers for some keys).
pub(super) fn text(config: &Config, key: &str) -> Option<String> {
    match config.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// The declared notes with the marker line.
pub(super) fn marked_description(description: &str) -> String {
    if description.is_empty() {
        MARKER.to_string()
    } else {
        format!("{}\n{MARKER}", description.trim_end())
    }
}

pub(super) fn is_ours(config: &Config) -> bool {
    text(config, "description").is_some_and(|d| d.contains(MARKER))
}

/// Normalised tags: lowercase, sorted, without duplicates.
pub(super) fn normalise_tags<'a>(tags: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = tags
        .into_iter()
        .map(|t| t.trim().to_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    out.sort();
    out.dedup();
    out
}

pub(super) fn current_tags(config: &Config) -> Vec<String> {
    let text = text(config, "tags").unwrap_or_default();
    normalise_tags(text.split([';', ',', ' ']))
}

/// Disk size in bytes from a drive string (`local-lvm:vm-1-disk-0,size=8G`).
pub(super) fn disk_size(drive: &str) -> Option<u64> {
    let size = drive.split(',').find_map(|p| p.strip_prefix("size="))?;
    let (digits, unit) = size.split_at(
        size.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(size.len()),
    );
    let value: f64 = digits.parse().ok()?;
    let factor: f64 = match unit {
        "" => 1.0,
        "K" => 1024.0,
        "M" => 1024.0 * 1024.0,
        "G" => 1024.0 * 1024.0 * 1024.0,
        "T" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((value * factor) as u64)
}

pub(super) const GIB: u64 = 1024 * 1024 * 1024;

/// A `netN` value parsed: model, MAC and the other options.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Net {
    pub(super) model: String,
    pub(super) mac: Option<String>,
    pub(super) options: BTreeMap<String, String>,
}

pub(super) fn parse_net(value: &str) -> Net {
    let mut net = Net::default();
    for (i, part) in value.split(',').enumerate() {
        let (key, val) = part.split_once('=').unwrap_or((part, ""));
        if i == 0 && MODELS.contains(&key) {
            net.model = key.to_string();
            if !val.is_empty() {
                net.mac = Some(val.to_uppercase());
            }
        } else if key == "macaddr" {
            net.mac = Some(val.to_uppercase());
        } else {
            net.options.insert(key.to_string(), val.to_string());
        }
    }
    net
}

pub(super) fn net_value(net: &Network, mac: Option<&str>) -> String {
    let mut value = match mac {
        Some(mac) => format!("{}={},bridge={}", net.model, mac.to_uppercase(), net.bridge),
        None => format!("{},bridge={}", net.model, net.bridge),
    };
    if net.firewall {
        value.push_str(",firewall=1");
    }
    if let Some(tag) = net.vlan {
        value.push_str(&format!(",tag={tag}"));
    }
    value
}

pub(super) fn ip_value(ip: &IpConfig) -> String {
    let mut parts = Vec::new();
    if let Some(v4) = &ip.ipv4 {
        parts.push(format!("ip={v4}"));
    }
    if let Some(gw) = &ip.gateway4 {
        parts.push(format!("gw={gw}"));
    }
    if let Some(v6) = &ip.ipv6 {
        parts.push(format!("ip6={v6}"));
    }
    if let Some(gw) = &ip.gateway6 {
        parts.push(format!("gw6={gw}"));
    }
    parts.join(",")
}

pub(super) fn macs(config: &Config) -> Vec<String> {
    (0..32)
        .filter_map(|i| text(config, &format!("net{i}")))
        .filter_map(|v| parse_net(&v).mac)
        .collect()
}
