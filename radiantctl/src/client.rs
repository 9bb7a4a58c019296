//! Connections to radiants.

use std::time::Duration;

use radiant_proto as pb;
use radiant_proto::station_client::StationClient;
use radiant_proto::supervisor_client::SupervisorClient;
use tonic::transport::Channel;
use tonic::transport::Endpoint;

use crate::error::CtlError;
use crate::error::Result;

/// Per-call deadline.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks `host:port` so a typo is a usage error, not a timeout.
pub fn check_addr(addr: &str) -> Result<String> {
    let addr = addr.trim();
    let ok = addr.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
    if !ok {
        return Err(CtlError::Usage(format!("invalid address {addr:?}: expected host:port")));
    }
    Ok(addr.to_string())
}

/// Parses a comma-separated address list.
pub fn addr_list(text: &str) -> Result<Vec<String>> {
    let v: Vec<String> = text.split(',').filter(|s| !s.trim().is_empty()).map(check_addr).collect::<Result<_>>()?;
    if v.is_empty() {
        return Err(CtlError::Usage("empty address list".into()));
    }
    Ok(v)
}

/// A lazily connecting channel to `addr`.
pub fn channel(addr: &str) -> Result<Channel> {
    let ep = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| CtlError::Usage(format!("invalid address {addr:?}: {e}")))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(CALL_TIMEOUT)
        .tcp_nodelay(true);
    Ok(ep.connect_lazy())
}

/// The supervisor of `addr`.
pub fn supervisor(addr: &str) -> Result<SupervisorClient<Channel>> {
    Ok(SupervisorClient::new(channel(addr)?))
}

/// The station API through `addr`.
pub fn station(addr: &str) -> Result<StationClient<Channel>> {
    Ok(StationClient::new(channel(addr)?))
}

/// The node's status.
pub async fn node_status(addr: &str) -> Result<pb::NodeStatus> {
    supervisor(addr)?
        .status(pb::StatusRequest {})
        .await
        .map(|r| r.into_inner())
        .map_err(|s| CtlError::from_status(addr, s))
}

/// The cluster map, through the first of `addrs` that answers.
pub async fn get_map(addrs: &[String]) -> Result<pb::ClusterMap> {
    let mut last = CtlError::Unavailable("no address given".into());
    for addr in addrs {
        match station(addr)?.get_map(pb::GetMapRequest {}).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(s) => last = CtlError::from_status(addr, s),
        }
    }
    Err(last)
}

/// Retries `f` until it succeeds with `Some` or `deadline` passes; returns the last error.
pub async fn wait_for<T, F, Fut>(deadline: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let end = tokio::time::Instant::now() + deadline;
    let mut last: Option<CtlError> = None;
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e @ (CtlError::ClusterMismatch(_) | CtlError::Invalid(_) | CtlError::Usage(_))) => return Err(e),
            Err(e) => last = Some(e),
        }
        if tokio::time::Instant::now() >= end {
            return Err(match last {
                Some(CtlError::Unavailable(m)) | Some(CtlError::Failed(m)) => {
                    CtlError::Unavailable(format!("gave up after {}s: {m}", deadline.as_secs()))
                }
                Some(e) => e,
                None => CtlError::Unavailable(format!("gave up after {}s", deadline.as_secs())),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
