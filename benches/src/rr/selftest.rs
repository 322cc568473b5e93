//! The clients alone, against a reflector that costs nothing: how fast they take in a
//! whole cold start. Proves they are not what a reflector's time measures.
//!
//! The stand-in listens on the reflector's address with a deep backlog, answers each
//! OPEN and, without waiting for anything, writes every other client's block to the
//! new session as a reflected route (ORIGINATOR_ID, CLUSTER_LIST, one UPDATE per block,
//! as the real reflectors send them), all encoded before the first client connects.
//! The time is the cold start's: the first connection until every client holds every
//! other block.

use super::clients::{announcement, client_addr, Clients, ClientsSpec, REFLECTOR};
use super::reflectors::CLUSTER_ID;
use super::{Link, RrError};
use bgp::types::{Asn, RouterId};
use bgp::wire::{encode_message, CodecParams, Frame, Message, Open};
use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// What the clients did against the stand-in.
#[derive(Clone, Copy, Debug)]
pub struct SelfTest {
    pub clients: usize,
    pub secs: f64,
    /// UPDATEs the clients read and counted per second.
    pub updates_per_sec: f64,
    /// CPU seconds of this process (clients and stand-in together).
    pub cpu_secs: f64,
}

fn params() -> CodecParams {
    CodecParams {
        four_octet_asn: true,
        ..CodecParams::default()
    }
}

/// Every client's block as the reflector sends it, one UPDATE each.
fn reflected(n: usize) -> Result<Vec<Bytes>, RrError> {
    (0..n)
        .map(|i| {
            let mut u = announcement(i);
            if let Some(a) = u.attrs.as_mut() {
                a.originator_id = Some(client_addr(i));
                a.cluster_list = vec![CLUSTER_ID];
            }
            let mut b = BytesMut::new();
            encode_message(&Message::Update(u), &params(), &mut b).map_err(|e| RrError::Setup {
                what: "encoding the stand-in's UPDATEs".into(),
                detail: e.to_string(),
            })?;
            Ok(b.freeze())
        })
        .collect()
}

async fn read_frame(s: &mut TcpStream, buf: &mut BytesMut) -> Option<Bytes> {
    loop {
        match bgp::wire::frame(&buf[..], &params()).ok()? {
            Frame::Complete { len, .. } => return Some(buf.split_to(len).freeze()),
            Frame::Incomplete { .. } => {
                buf.reserve(4096);
                if s.read_buf(buf).await.ok()? == 0 {
                    return None;
                }
            }
        }
    }
}

/// One session of the stand-in: OPEN, KEEPALIVE, then the other clients' blocks.
async fn serve(mut s: TcpStream, all: Arc<Vec<Bytes>>) -> Option<()> {
    s.set_nodelay(true).ok()?;
    let mut buf = BytesMut::new();
    let open = read_frame(&mut s, &mut buf).await?;
    let peer = match bgp::wire::decode_message(&open, &CodecParams::default())
        .ok()?
        .message
    {
        Some(Message::Open(o)) => o.router_id,
        _ => return None,
    };
    // The clients' router ids are their addresses, in order.
    let me = u32::from(peer.0).checked_sub(u32::from(client_addr(0)))? as usize;
    let ours = Open::new(
        Asn(super::clients::CLUSTER_AS),
        90,
        RouterId(REFLECTOR),
        vec![
            bgp::wire::Capability::Multiprotocol(bgp::types::AfiSafi::new(1, 1)),
            bgp::wire::Capability::FourOctetAsn(Asn(super::clients::CLUSTER_AS)),
        ],
    );
    let mut out = BytesMut::new();
    encode_message(&Message::Open(ours), &CodecParams::default(), &mut out).ok()?;
    encode_message(&Message::Keepalive, &CodecParams::default(), &mut out).ok()?;
    for (k, u) in all.iter().enumerate() {
        if k != me {
            out.extend_from_slice(u);
        }
    }
    s.write_all(&out).await.ok()?;
    // Drain until the client goes.
    while read_frame(&mut s, &mut buf).await.is_some() {}
    Some(())
}

/// Runs the clients against the stand-in, in fresh namespaces.
pub fn run(n: usize, timeout: Duration) -> Result<SelfTest, RrError> {
    super::raise_nofile();
    super::sweep_stale();
    let dir = tempfile::Builder::new()
        .prefix("svrr-selftest-")
        .tempdir()
        .map_err(|e| RrError::Setup {
            what: "a temporary directory".into(),
            detail: e.to_string(),
        })?;
    let link = Link::new(n, dir.path())?;
    let all = Arc::new(reflected(n)?);
    let rt = link
        .rr
        .handle
        .in_thread(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
        })?
        .map_err(|e| RrError::Setup {
            what: "the stand-in's runtime".into(),
            detail: e.to_string(),
        })?;
    // The socket is made and bound on a thread inside the reflector's namespace.
    let sock = link.rr.handle.in_thread(|| -> std::io::Result<TcpSocket> {
        let s = TcpSocket::new_v4()?;
        s.set_reuseaddr(true)?;
        s.bind(SocketAddr::new(REFLECTOR.into(), 179))?;
        Ok(s)
    })?;
    let listener = rt
        .block_on(async { sock.and_then(|s| s.listen(4096)) })
        .map_err(|e| RrError::Setup {
            what: "the stand-in's listener".into(),
            detail: e.to_string(),
        })?;
    rt.spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve(s, all.clone()));
        }
    });
    let cpu0 = super::own_cpu_secs();
    let c = Clients::start(
        &link.clients.handle,
        ClientsSpec {
            n,
            reflector: REFLECTOR,
            hold_time: 90,
            connect_timeout: timeout,
        },
    )
    .map_err(super::setup("the clients"))?;
    let start = Instant::now();
    while !c.board().converged() {
        let f = c.board().failures();
        if !f.is_empty() || start.elapsed() > timeout {
            return Err(RrError::Failed {
                who: "the clients against the stand-in".into(),
                detail: format!("{}; {}", super::progress(&c), f.join("; ")),
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let done = crate::peer::mono_ns();
    let secs = done.saturating_sub(c.board().first_connect_ns()) as f64 / 1e9;
    let updates = c.board().updates();
    let cpu_secs = super::own_cpu_secs() - cpu0;
    drop(c);
    rt.shutdown_timeout(Duration::from_secs(1));
    drop(link);
    Ok(SelfTest {
        clients: n,
        secs,
        updates_per_sec: updates as f64 / secs.max(1e-9),
        cpu_secs,
    })
}
