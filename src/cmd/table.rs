//! Plain-text tables for the status commands, in the spirit of `birdc show protocols` and
//! `calicoctl node status`.

use bgp::status::{PeerStatus, RouteEntry};
use std::fmt::Write;

/// Render rows as left-aligned columns.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, c) in cells.enumerate() {
            let _ = write!(s, "{:<w$}  ", c, w = widths.get(i).copied().unwrap_or(0));
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&mut out, &mut header.iter().copied());
    for r in rows {
        line(&mut out, &mut r.iter().map(String::as_str));
    }
    out
}

pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h:02}h{m:02}m")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

pub fn peers(peers: &[PeerStatus]) -> String {
    let rows: Vec<Vec<String>> = peers
        .iter()
        .map(|p| {
            let name = match &p.name {
                Some(n) => format!("{} ({n})", p.address),
                None => p.address.to_string(),
            };
            let (mut rcv, mut acc, mut sent) = (0, 0, 0);
            for f in &p.families {
                rcv += f.received;
                acc += f.accepted;
                sent += f.sent;
            }
            let since = match (p.uptime_secs, p.idle_hold_secs) {
                (Some(s), _) => duration(s),
                (None, Some(h)) => format!("retry in {h}s"),
                _ => String::new(),
            };
            vec![
                name,
                p.asn.to_string(),
                p.kind.clone(),
                p.state.to_string(),
                since,
                format!("{rcv}/{acc}/{sent}"),
                p.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    render(
        &[
            "PEER",
            "AS",
            "TYPE",
            "STATE",
            "SINCE",
            "RECV/ACC/SENT",
            "LAST ERROR",
        ],
        &rows,
    )
}

fn origin(o: bgp::wire::attr::Origin) -> &'static str {
    match o {
        bgp::wire::attr::Origin::Igp => "igp",
        bgp::wire::attr::Origin::Egp => "egp",
        bgp::wire::attr::Origin::Incomplete => "incomplete",
    }
}

pub fn routes(routes: &[RouteEntry]) -> String {
    let mut out = String::new();
    for r in routes {
        for (i, p) in r.paths.iter().enumerate() {
            let prefix = if i == 0 {
                r.prefix.to_string()
            } else {
                String::new()
            };
            let from = p.peer.map_or("local".to_string(), |a| a.to_string());
            let mut flags = Vec::new();
            if p.best {
                flags.push("best");
            } else if p.multipath {
                flags.push("multipath");
            }
            if p.stale {
                flags.push("stale");
            }
            if p.filtered {
                flags.push("filtered");
            }
            let _ = write!(
                out,
                "{prefix:<20} via {:<16} from {from:<16} [{}] {}",
                p.next_hop.as_deref().unwrap_or("-"),
                p.as_path,
                origin(p.origin)
            );
            if let Some(lp) = p.local_pref {
                let _ = write!(out, " lp {lp}");
            }
            if let Some(med) = p.med {
                let _ = write!(out, " med {med}");
            }
            if !p.communities.is_empty() {
                let c: Vec<String> = p.communities.iter().map(ToString::to_string).collect();
                let _ = write!(out, " comm {}", c.join(","));
            }
            if !p.large_communities.is_empty() {
                let c: Vec<String> = p
                    .large_communities
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                let _ = write!(out, " lcomm {}", c.join(","));
            }
            if !flags.is_empty() {
                let _ = write!(out, " *{}", flags.join(" "));
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let t = render(
            &["A", "LONGER"],
            &[
                vec!["xxxx".into(), "y".into()],
                vec!["z".into(), "w".into()],
            ],
        );
        assert_eq!(t, "A     LONGER\nxxxx  y\nz     w\n");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(59), "00:00:59");
        assert_eq!(duration(3661), "01:01:01");
        assert_eq!(duration(90061), "1d01h01m");
    }
}
