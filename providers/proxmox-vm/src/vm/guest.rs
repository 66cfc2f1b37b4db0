//! What the QEMU guest agent reports: addresses and the SSH host key.

use super::*;

/// What the guest agent reported.
#[derive(Debug, Default)]
pub(super) struct Guest {
    pub(super) ipv4: Vec<String>,
    pub(super) ipv6: Vec<String>,
    pub(super) host_key: Option<String>,
}

/// Asks the guest agent for addresses and the host key; with `wait`,
/// polls (with backoff) until the agent answers with an address, at most
/// that long.
pub(super) async fn guest_info(
    api: &Api,
    located: &Located,
    inputs: &VmInputs,
    wait: Option<Duration>,
) -> Result<Guest> {
    let (node, vmid) = (&located.node, located.vmid);
    let started = Instant::now();
    // A guest takes seconds to boot its agent: asking every 200 ms at first
    // cost calls without answering sooner (benchmark: 6 calls to 4, and the
    // answer 0.3 s earlier).
    let mut pause = Duration::from_millis(500);
    let mut last: String;
    let has_networks = (0..32).any(|i| located.config.current.contains_key(&format!("net{i}")));
    loop {
        match api
            .get(
                &format!("nodes/{node}/qemu/{vmid}/agent/network-get-interfaces"),
                &[],
            )
            .await
        {
            Ok(answer) => {
                let mut guest = Guest::default();
                if let Some(interfaces) = answer["result"].as_array() {
                    for interface in interfaces {
                        for address in interface["ip-addresses"].as_array().into_iter().flatten() {
                            let Some(ip) = address["ip-address"].as_str() else {
                                continue;
                            };
                            match ip.parse::<std::net::IpAddr>() {
                                Ok(std::net::IpAddr::V4(v4))
                                    if !v4.is_loopback() && !v4.is_link_local() =>
                                {
                                    guest.ipv4.push(ip.to_string())
                                }
                                Ok(std::net::IpAddr::V6(v6))
                                    if !v6.is_loopback()
                                        && (v6.segments()[0] & 0xffc0) != 0xfe80 =>
                                {
                                    guest.ipv6.push(ip.to_string())
                                }
                                _ => {}
                            }
                        }
                    }
                    if !has_networks || !guest.ipv4.is_empty() || !guest.ipv6.is_empty() {
                        match read_host_key(api, node, vmid, &inputs.host_key_path).await {
                            Ok(key) => {
                                guest.host_key = Some(key);
                                return Ok(guest);
                            }
                            Err(reason) => last = reason,
                        }
                    } else {
                        last = "the guest agent reports no address yet".into();
                    }
                } else {
                    // Windows guests answer 200 with {"result": {"error": ...}}.
                    last = format!("the guest agent answered {}", answer["result"]);
                }
            }
            Err(e) if e.status.is_some_and(|s| s.as_u16() == 500) => last = e.reason.clone(),
            Err(e) => return Err(e.error),
        }
        let Some(limit) = wait else {
            return Ok(Guest::default());
        };
        if started.elapsed() >= limit {
            return Err(Error::unavailable(format!("VM {vmid} runs, but its guest agent gave no address and host key within {}s ({last})", limit.as_secs()))
                .with_field("timeouts.agentSeconds")
                .with_hint("check that the image runs qemu-guest-agent and gets an address; raise `timeouts.agentSeconds`, or set `waitForAgent = false` to go on without addresses"));
        }
        tracing::debug!(vmid, reason = %last, "waiting for the guest agent");
        tokio::time::sleep(pause.min(limit.saturating_sub(started.elapsed()))).await;
        pause = (pause * 3 / 2).min(Duration::from_secs(5));
    }
}

pub(super) async fn read_host_key(
    api: &Api,
    node: &str,
    vmid: u32,
    path: &str,
) -> std::result::Result<String, String> {
    match api
        .get(
            &format!("nodes/{node}/qemu/{vmid}/agent/file-read"),
            &[("file", path.to_string())],
        )
        .await
    {
        Ok(answer) => {
            let content = answer["content"]
                .as_str()
                .unwrap_or_default()
                .trim()
                .to_string();
            if content.split_whitespace().count() >= 2 {
                Ok(content)
            } else {
                Err(format!("`{path}` holds no public key yet"))
            }
        }
        Err(e) => Err(e.reason),
    }
}
