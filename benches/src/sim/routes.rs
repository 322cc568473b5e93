//! Every node's kernel routes, as the kernel announces them.
//!
//! One netlink socket per node namespace, subscribed to IPv4 route changes
//! (`RTMGRP_IPV4_ROUTE`) before its agent starts, and one thread reading them all: the
//! routes serval programs (protocol 83) per node, each stamped with the moment its
//! notification arrived. Should a socket's buffer overflow (`ENOBUFS`), that node's
//! table is read again with `ip -j route`, and the overflow counted.

use std::collections::HashMap;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use ipnet::Ipv4Net;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteType};
use netlink_packet_route::RouteNetlinkMessage;
use serval_integration::NsHandle;

/// serval's route protocol number.
pub const SERVAL_PROTO: u8 = 83;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;

/// One node's serval routes.
#[derive(Debug, Default)]
pub struct NodeRoutes {
    /// Destination → (blackhole, when it was added or last changed).
    pub routes: HashMap<Ipv4Net, (bool, Instant)>,
    /// Destination → when it was removed (until it is added again).
    pub removed: HashMap<Ipv4Net, Instant>,
    pub overflows: u32,
}

impl NodeRoutes {
    /// When `net` was routed (not as a blackhole), if it is.
    pub fn routed(&self, net: &Ipv4Net) -> Option<Instant> {
        match self.routes.get(net) {
            Some((false, at)) => Some(*at),
            _ => None,
        }
    }

    /// When `net` was removed, if it is gone.
    pub fn gone(&self, net: &Ipv4Net) -> Option<Instant> {
        if self.routes.get(net).is_some_and(|(bh, _)| !bh) {
            return None;
        }
        Some(self.removed.get(net).copied().unwrap_or(Instant::now()))
    }
}

pub struct RouteWatch {
    state: Arc<Mutex<Vec<NodeRoutes>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RouteWatch {
    /// Subscribes in every namespace of `nodes` (in order: the index is the node's).
    pub fn start(nodes: &[String]) -> anyhow::Result<RouteWatch> {
        let mut socks = Vec::with_capacity(nodes.len());
        for ns in nodes {
            let fd = NsHandle::named(ns)
                .in_thread(subscribe)
                .map_err(|e| anyhow!("{ns}: {e}"))??;
            socks.push((ns.clone(), fd));
        }
        let state = Arc::new(Mutex::new(
            (0..nodes.len()).map(|_| NodeRoutes::default()).collect(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::Builder::new()
                .name("route-watch".into())
                .spawn(move || read_all(&socks, &state, &stop))
                .context("starting the route watcher")?
        };
        Ok(RouteWatch {
            state,
            stop,
            thread: Some(thread),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, Vec<NodeRoutes>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `done` returns the moment the condition became true, looking every
    /// 5 ms; fails after `timeout` with what `pending` says about the state.
    pub fn wait(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[NodeRoutes]) -> Option<Instant>,
        pending: impl Fn(&[NodeRoutes]) -> String,
    ) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let s = self.lock();
                if let Some(at) = done(&s) {
                    return Ok(at);
                }
                if Instant::now() >= deadline {
                    bail!("{what}: not within {timeout:?}: {}", pending(&s));
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn overflows(&self) -> u32 {
        self.lock().iter().map(|n| n.overflows).sum()
    }
}

impl Drop for RouteWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_all(socks: &[(String, OwnedFd)], state: &Mutex<Vec<NodeRoutes>>, stop: &AtomicBool) {
    let mut pfds: Vec<libc::pollfd> = socks
        .iter()
        .map(|(_, fd)| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut buf = vec![0u8; 1 << 16];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: `pfds` is a valid array of its length.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 100) };
        if n <= 0 {
            continue;
        }
        for (i, p) in pfds.iter_mut().enumerate() {
            if p.revents == 0 {
                continue;
            }
            p.revents = 0;
            loop {
                // SAFETY: `buf` is valid for its length; the fd is an open socket we own.
                let n = unsafe {
                    libc::recv(p.fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT)
                };
                let at = Instant::now();
                if n < 0 {
                    if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOBUFS) {
                        resync(&socks[i].0, i, state);
                        continue;
                    }
                    break;
                }
                if n == 0 {
                    break;
                }
                let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                let mut data = &buf[..n as usize];
                while data.len() >= 16 {
                    let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
                    if len < 16 || len > data.len() {
                        break;
                    }
                    if let Some((net, change)) = parse(&data[..len]) {
                        apply(&mut s[i], net, change, at);
                    }
                    data = &data[len.next_multiple_of(4).min(data.len())..];
                }
            }
        }
    }
}

enum Change {
    Add { blackhole: bool },
    Del,
}

fn apply(n: &mut NodeRoutes, net: Ipv4Net, change: Change, at: Instant) {
    match change {
        Change::Add { blackhole } => {
            n.removed.remove(&net);
            n.routes.insert(net, (blackhole, at));
        }
        Change::Del => {
            n.routes.remove(&net);
            n.removed.insert(net, at);
        }
    }
}

/// A serval IPv4 route added or removed, from one netlink message.
fn parse(msg: &[u8]) -> Option<(Ipv4Net, Change)> {
    let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(msg).ok()?;
    let (r, add) = match m.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)) => (r, true),
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelRoute(r)) => (r, false),
        _ => return None,
    };
    if u8::from(r.header.protocol) != SERVAL_PROTO {
        return None;
    }
    let len = r.header.destination_prefix_length;
    let net = r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(d)) => Ipv4Net::new(*d, len).ok(),
        _ => None,
    })?;
    let change = if add {
        Change::Add {
            blackhole: r.header.kind == RouteType::BlackHole,
        }
    } else {
        Change::Del
    };
    Some((net, change))
}

/// Reads node `i`'s serval routes again after its socket overflowed.
fn resync(ns: &str, i: usize, state: &Mutex<Vec<NodeRoutes>>) {
    let out = std::process::Command::new("ip")
        .args(["-n", ns, "-j", "-4", "route", "show", "proto", "83"])
        .output();
    let at = Instant::now();
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    s[i].overflows += 1;
    let Ok(out) = out else { return };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return;
    };
    let mut now: HashMap<Ipv4Net, bool> = HashMap::new();
    for r in v.as_array().into_iter().flatten() {
        let Some(dst) = r["dst"].as_str() else {
            continue;
        };
        let Ok(net) = dst.parse::<Ipv4Net>() else {
            continue;
        };
        now.insert(net, r["type"] == "blackhole");
    }
    let old: Vec<Ipv4Net> = s[i].routes.keys().copied().collect();
    for net in old {
        if !now.contains_key(&net) {
            apply(&mut s[i], net, Change::Del, at);
        }
    }
    for (net, blackhole) in now {
        if s[i].routes.get(&net).map(|r| r.0) != Some(blackhole) {
            apply(&mut s[i], net, Change::Add { blackhole }, at);
        }
    }
}

/// A netlink socket in the calling thread's namespace receiving IPv4 route changes.
fn subscribe() -> anyhow::Result<OwnedFd> {
    // SAFETY: plain syscalls on a descriptor we own; `addr` outlives the calls.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        );
        if fd < 0 {
            bail!("netlink socket: {}", std::io::Error::last_os_error());
        }
        let sock = OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_nl = std::mem::zeroed();
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = RTMGRP_IPV4_ROUTE;
        if libc::bind(
            fd,
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        ) != 0
        {
            bail!("netlink bind: {}", std::io::Error::last_os_error());
        }
        let size: libc::c_int = 4 << 20;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        );
        Ok(sock)
    }
}
