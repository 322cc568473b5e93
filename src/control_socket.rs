//! The local control socket: how `serval bgp status`, `serval node status` and friends
//! talk to a running daemon. One JSON request per line, one JSON answer per line, over a
//! unix socket that only root can open.

use anyhow::{bail, Context};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Longest request line accepted; requests are small.
const MAX_REQUEST: usize = 64 * 1024;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Reply<T> {
    Ok(T),
    Error(String),
}

/// Answers requests of type `Req` with JSON values.
pub trait Handler<Req>: Send + Sync + 'static {
    fn handle(&self, req: Req) -> impl Future<Output = anyhow::Result<serde_json::Value>> + Send;
}

/// Bind the socket at `path`, replacing a stale one left by a process that died, but
/// refusing to take over a socket a live process still answers on.
///
/// Connecting to a unix socket needs write permission on it, and the requests can
/// reset sessions: the socket is mode 0600 (its owner, root, alone) from the moment it
/// appears at `path`. It is bound under a temporary name, restricted, then renamed into
/// place, so no other user can connect in between; a directory serval creates for it is
/// 0700.
pub async fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        ipam::store::file::ensure_private_dir(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            bail!(
                "{} is in use by a running serval; pass --socket to run another instance",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".new.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)
        .with_context(|| format!("binding control socket {}", tmp.display()))?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", tmp.display()))
        .and_then(|()| {
            std::fs::rename(&tmp, path)
                .with_context(|| format!("moving the control socket to {}", path.display()))
        });
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(listener)
}

/// Serve requests until `stop` is cancelled, then remove the socket file.
pub async fn serve<Req, H>(
    listener: UnixListener,
    path: PathBuf,
    handler: Arc<H>,
    stop: CancellationToken,
) where
    Req: DeserializeOwned + Send + 'static,
    H: Handler<Req>,
{
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            conn = listener.accept() => match conn {
                Ok((stream, _)) => {
                    let handler = handler.clone();
                    tokio::spawn(async move {
                        if let Err(e) = answer::<Req, H>(stream, &*handler).await {
                            debug!(error = %e, "control connection ended");
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
    let _ = std::fs::remove_file(&path);
}

async fn answer<Req, H>(stream: UnixStream, handler: &H) -> anyhow::Result<()>
where
    Req: DeserializeOwned,
    H: Handler<Req>,
{
    let (rd, mut wr) = stream.into_split();
    let mut lines = BufReader::new(rd.take(MAX_REQUEST as u64 * 16)).lines();
    while let Some(line) = lines.next_line().await? {
        if line.len() > MAX_REQUEST {
            bail!("request too long");
        }
        let reply = match serde_json::from_str::<Req>(&line) {
            Ok(req) => match handler.handle(req).await {
                Ok(v) => Reply::Ok(v),
                Err(e) => Reply::Error(format!("{e:#}")),
            },
            Err(e) => Reply::Error(format!("bad request: {e}")),
        };
        let mut out = serde_json::to_vec(&reply)?;
        out.push(b'\n');
        wr.write_all(&out).await?;
    }
    Ok(())
}

/// Send one request to the daemon at `path` and decode its answer.
pub async fn request<Req: Serialize, Resp: DeserializeOwned>(
    path: &Path,
    req: &Req,
) -> anyhow::Result<Resp> {
    let stream = UnixStream::connect(path).await.with_context(|| {
        format!(
            "cannot reach serval at {} (is it running? pass --socket for another instance)",
            path.display()
        )
    })?;
    let (rd, mut wr) = stream.into_split();
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    wr.write_all(&line).await?;
    let mut lines = BufReader::new(rd).lines();
    let answer = lines
        .next_line()
        .await?
        .context("the daemon closed the connection without answering")?;
    match serde_json::from_str::<Reply<Resp>>(&answer)
        .context("undecodable answer from the daemon")?
    {
        Reply::Ok(v) => Ok(v),
        Reply::Error(e) => bail!("{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize)]
    #[serde(tag = "op", rename_all = "kebab-case")]
    enum Req {
        Echo { text: String },
        Fail,
    }

    struct Echo;
    impl Handler<Req> for Echo {
        async fn handle(&self, req: Req) -> anyhow::Result<serde_json::Value> {
            match req {
                Req::Echo { text } => Ok(serde_json::json!({ "echo": text })),
                Req::Fail => bail!("asked to fail"),
            }
        }
    }

    #[tokio::test]
    async fn request_reply_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let listener = bind(&path).await.unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve::<Req, _>(
            listener,
            path.clone(),
            Arc::new(Echo),
            stop.clone(),
        ));

        let v: serde_json::Value = request(&path, &Req::Echo { text: "hi".into() })
            .await
            .unwrap();
        assert_eq!(v["echo"], "hi");
        let err = request::<_, serde_json::Value>(&path, &Req::Fail)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("asked to fail"), "{err}");
        let err = request::<_, serde_json::Value>(&path, &serde_json::json!({"op": "nope"}))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("bad request"), "{err}");

        // A second daemon on the same socket is refused while the first answers.
        let err = bind(&path).await.unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");

        stop.cancel();
        server.await.unwrap();
        assert!(!path.exists(), "socket removed on shutdown");
        // A stale socket file (no one listening) is replaced.
        std::os::unix::net::UnixListener::bind(&path).unwrap();
        bind(&path).await.unwrap();
    }
}
