//! Radiant's Kv client, shared by radiantctl, the tests and the benchmarks.
//!
//! It caches the cluster map, computes each key's shard and sends the request straight to
//! the herald of the shard's order. A `KvRedirect` (wrong node) or a refused connection is
//! retried, because the request was certainly not applied; a write whose outcome is unknown
//! (the connection broke after it was sent, or the herald lost its quorum mid-way) is never
//! retried blindly, since applying it twice could break linearizability: it is reported as
//! [`ClientError::Unknown`].
#![deny(missing_docs)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use radiant_proto as pb;
use radiant_proto::kv_client::KvClient;
use radiant_proto::station_client::StationClient;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::transport::Endpoint;

/// A client failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The request is invalid (empty or oversized key, oversized value...); nothing was stored.
    #[error("{0}")]
    Invalid(String),
    /// The cluster could not be reached, or did not answer in time; a write was not applied.
    #[error("{0}")]
    Unavailable(String),
    /// A write may or may not have been applied.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// A scan met a changed shard count (fracture or consolidate); `scan` starts over by
    /// itself, so callers see this only if the count kept changing.
    #[error("shard count changed: {0}")]
    ShardCountChanged(String),
    /// Anything else.
    #[error("{0}")]
    Failed(String),
}

/// Result alias.
pub type Result<T> = std::result::Result<T, ClientError>;

/// Client settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Total time one operation may take, retries included.
    pub op_timeout: Duration,
    /// Time one RPC may take.
    pub rpc_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self { op_timeout: Duration::from_secs(10), rpc_timeout: Duration::from_secs(3) }
    }
}

/// A Kv client.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    seeds: Vec<String>,
    opts: Options,
    map: Mutex<Option<Arc<pb::ClusterMap>>>,
    heralds: Mutex<HashMap<u64, String>>,
    channels: Mutex<HashMap<String, Channel>>,
    /// Addresses that refused a connection recently, avoided for [`AVOID_FOR`].
    dead: Mutex<HashMap<String, Instant>>,
}

/// How long an address that refused a connection is avoided.
const AVOID_FOR: Duration = Duration::from_secs(1);

enum Attempt<T> {
    Done(T),
    /// Not applied; try again (at `addr` if given).
    Retry(Option<String>, String),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A request with a deadline.
fn timed<T: Clone>(req: &T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(req.clone());
    r.set_timeout(timeout);
    r
}

/// Whether a transport failure happened before the request left (safe to retry a write).
fn not_sent(s: &tonic::Status) -> bool {
    let m = s.message();
    s.code() == tonic::Code::Unavailable
        && (m.contains("tcp connect error")
            || m.contains("Connection refused")
            || m.contains("error trying to connect"))
}

impl Client {
    /// A client for the cluster any of `seeds` (host:port) belongs to. Connects lazily.
    pub fn new(seeds: Vec<String>, opts: Options) -> Self {
        Client {
            inner: Arc::new(Inner {
                seeds,
                opts,
                map: Mutex::new(None),
                heralds: Mutex::new(HashMap::new()),
                channels: Mutex::new(HashMap::new()),
                dead: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn channel(&self, addr: &str) -> Result<Channel> {
        let mut channels = lock(&self.inner.channels);
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let ch = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| ClientError::Invalid(format!("bad address {addr:?}: {e}")))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(2))
            .connect_lazy();
        channels.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }

    fn kv(&self, addr: &str) -> Result<KvClient<Channel>> {
        Ok(KvClient::new(self.channel(addr)?).max_decoding_message_size(64 * 1024 * 1024))
    }

    /// Fetches the cluster map from the first seed that answers.
    pub async fn refresh_map(&self) -> Result<Arc<pb::ClusterMap>> {
        let mut last = ClientError::Unavailable("no seed address".into());
        for seed in &self.inner.seeds {
            let mut req = tonic::Request::new(pb::GetMapRequest {});
            req.set_timeout(self.inner.opts.rpc_timeout);
            match StationClient::new(self.channel(seed)?).get_map(req).await {
                Ok(m) => {
                    let m = Arc::new(m.into_inner());
                    *lock(&self.inner.map) = Some(m.clone());
                    lock(&self.inner.heralds).clear();
                    return Ok(m);
                }
                // A node outside any cluster, or of another one, will not change by retrying.
                Err(s)
                    if pb::ErrorDetail::of(&s).is_some_and(|d| {
                        matches!(d.error_code(), pb::ErrorCode::NotInCluster | pb::ErrorCode::ClusterMismatch)
                    }) =>
                {
                    last = ClientError::Failed(format!("{seed}: {}", s.message()))
                }
                Err(s) => last = ClientError::Unavailable(format!("{seed}: {}", s.message())),
            }
        }
        Err(last)
    }

    async fn map(&self) -> Result<Arc<pb::ClusterMap>> {
        let cached = lock(&self.inner.map).clone();
        match cached {
            Some(m) => Ok(m),
            None => self.refresh_map().await,
        }
    }

    /// The address to send a request for `shard` to: the herald we were redirected to, the
    /// map's herald, or, when that one refused a connection just now (it may have died and a
    /// new herald not yet registered), another member of the order, which redirects to the
    /// herald as soon as its Raft group elected one.
    fn addr_for(&self, map: &pb::ClusterMap, shard: u32) -> (u64, String) {
        let order = map.shard_orders.get(shard as usize).copied().unwrap_or(0);
        let alive = |a: &str| lock(&self.inner.dead).get(a).is_none_or(|t| t.elapsed() > AVOID_FOR);
        if let Some(a) = lock(&self.inner.heralds).get(&order).cloned()
            && alive(&a)
        {
            return (order, a);
        }
        let addr_of = |id: u64| map.nodes.iter().find(|n| n.id == id).map(|n| n.addr.clone());
        let info = map.orders.iter().find(|o| o.id == order);
        let herald = info.and_then(|o| o.herald).and_then(addr_of);
        let candidates =
            herald.into_iter().chain(info.into_iter().flat_map(|o| o.members.iter().filter_map(|m| addr_of(*m))));
        let mut first = None;
        for a in candidates {
            if alive(&a) {
                return (order, a);
            }
            first.get_or_insert(a);
        }
        (order, first.unwrap_or_else(|| self.inner.seeds[0].clone()))
    }

    /// Runs `call` against the right node for `shard` until it succeeds, fails for good, or
    /// the operation's deadline passes. `write` decides whether ambiguous failures may retry.
    async fn run<T, F, Fut>(&self, shard_of_map: impl Fn(&pb::ClusterMap) -> u32, write: bool, call: F) -> Result<T>
    where
        F: Fn(KvClient<Channel>, Duration) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, tonic::Status>>,
    {
        let deadline = Instant::now() + self.inner.opts.op_timeout;
        let mut last;
        let mut backoff = Duration::from_millis(10);
        loop {
            let attempt = match self.map().await {
                Err(e @ (ClientError::Failed(_) | ClientError::Invalid(_))) => return Err(e),
                Err(e) => Attempt::Retry(None, e.to_string()),
                Ok(map) => {
                    let shard = shard_of_map(&map);
                    let (order, addr) = self.addr_for(&map, shard);
                    match call(self.kv(&addr)?, self.inner.opts.rpc_timeout).await {
                        Ok(v) => Attempt::Done(v),
                        Err(s) => self.classify(s, order, &addr, write)?,
                    }
                }
            };
            match attempt {
                Attempt::Done(v) => return Ok(v),
                Attempt::Retry(at, why) => {
                    last = why;
                    if at.is_none() {
                        // Nothing better known: the map may be stale.
                        let _ = self.refresh_map().await;
                    }
                }
            }
            if Instant::now() + backoff > deadline {
                return Err(ClientError::Unavailable(format!(
                    "gave up after {:?}: {last}",
                    self.inner.opts.op_timeout
                )));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(50));
        }
    }

    /// Decides what a failed call means, by the typed code the daemon attached (never by its
    /// message text), and for transport failures by whether the request certainly never left.
    fn classify<T>(&self, s: tonic::Status, order: u64, addr: &str, write: bool) -> Result<Attempt<T>> {
        let detail = pb::ErrorDetail::of(&s);
        let code = detail.as_ref().map_or(pb::ErrorCode::Unspecified, |d| d.error_code());
        match (s.code(), code) {
            (tonic::Code::InvalidArgument | tonic::Code::OutOfRange, _) => {
                Err(ClientError::Invalid(s.message().to_string()))
            }
            (_, pb::ErrorCode::NotHerald | pb::ErrorCode::HandingOver) => {
                let r = detail.and_then(|d| d.redirect).unwrap_or_default();
                if r.herald_addr.is_empty() {
                    lock(&self.inner.heralds).remove(&r.order_id);
                    return Ok(Attempt::Retry(None, s.message().to_string()));
                }
                lock(&self.inner.heralds).insert(r.order_id, r.herald_addr.clone());
                if r.order_id != order {
                    // The shard is served by another order than our map says: refresh it.
                    return Ok(Attempt::Retry(None, s.message().to_string()));
                }
                Ok(Attempt::Retry(Some(r.herald_addr), s.message().to_string()))
            }
            (_, pb::ErrorCode::OutcomeUnknown) => Err(ClientError::Unknown(format!("{addr}: {}", s.message()))),
            (_, pb::ErrorCode::ShardCountChanged) => Err(ClientError::ShardCountChanged(s.message().to_string())),
            // Refused before anything was applied (no order serves the shard yet, a node still
            // starting): safe to retry, writes included.
            (_, pb::ErrorCode::Retry) => Ok(Attempt::Retry(None, format!("{addr}: {}", s.message()))),
            (_, pb::ErrorCode::NotInCluster | pb::ErrorCode::ClusterMismatch)
            | (tonic::Code::FailedPrecondition, _) => Err(ClientError::Failed(format!("{addr}: {}", s.message()))),
            _ if !write || not_sent(&s) => {
                lock(&self.inner.heralds).remove(&order);
                if not_sent(&s) {
                    lock(&self.inner.dead).insert(addr.to_string(), Instant::now());
                }
                Ok(Attempt::Retry(None, format!("{addr}: {}", s.message())))
            }
            _ => Err(ClientError::Unknown(format!("{addr}: {}", s.message()))),
        }
    }

    /// Reads `key`; `stale` allows any replica to answer.
    pub async fn get(&self, key: &[u8], stale: bool) -> Result<Option<Vec<u8>>> {
        self.get_served(key, stale).await.map(|(v, _)| v)
    }

    /// Like [`Client::get`], with which ownership of the key's shard answered.
    pub async fn get_served(&self, key: &[u8], stale: bool) -> Result<(Option<Vec<u8>>, pb::Served)> {
        let req = pb::GetRequest { key: key.to_vec(), stale };
        self.run(
            |m| pb::shard_of(key, m.shards_total),
            false,
            |mut c, t| {
                let r = timed(&req, t);
                async move {
                    c.get(r).await.map(|r| {
                        let r = r.into_inner();
                        (r.value, r.served.unwrap_or_default())
                    })
                }
            },
        )
        .await
    }

    /// Writes `key`; returns once the order committed it durably.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.put_served(key, value).await.map(|_| ())
    }

    /// Like [`Client::put`], with which ownership of the key's shard took the write.
    pub async fn put_served(&self, key: &[u8], value: &[u8]) -> Result<pb::Served> {
        let req = pb::PutRequest { key: key.to_vec(), value: value.to_vec() };
        self.run(
            |m| pb::shard_of(key, m.shards_total),
            true,
            |mut c, t| {
                let r = timed(&req, t);
                async move { c.put(r).await.map(|r| r.into_inner().served.unwrap_or_default()) }
            },
        )
        .await
    }

    /// Deletes `key`; returns whether it existed.
    pub async fn delete(&self, key: &[u8]) -> Result<bool> {
        self.delete_served(key).await.map(|(existed, _)| existed)
    }

    /// Like [`Client::delete`], with which ownership of the key's shard took the write.
    pub async fn delete_served(&self, key: &[u8]) -> Result<(bool, pb::Served)> {
        let req = pb::DeleteRequest { key: key.to_vec() };
        self.run(
            |m| pb::shard_of(key, m.shards_total),
            true,
            |mut c, t| {
                let r = timed(&req, t);
                async move {
                    c.delete(r).await.map(|r| {
                        let r = r.into_inner();
                        (r.existed, r.served.unwrap_or_default())
                    })
                }
            },
        )
        .await
    }

    /// Keys starting with `prefix`, in key order across every shard, at most `limit`.
    pub async fn scan(&self, prefix: &[u8], limit: u32, stale: bool) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        // A fracture or consolidation changes the shard count under a scan: start over with
        // the new map (it changes rarely, so a few tries are plenty).
        let mut tries = 0;
        loop {
            match self.scan_once(prefix, limit, stale).await {
                Err(ClientError::ShardCountChanged(why)) if tries < 5 => {
                    tries += 1;
                    let _ = why;
                    let _ = self.refresh_map().await;
                }
                other => return other,
            }
        }
    }

    async fn scan_once(&self, prefix: &[u8], limit: u32, stale: bool) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let shards = self.map().await?.shards_total;
        let calls = (0..shards).map(|s| {
            let req =
                pb::ScanRequest { prefix: prefix.to_vec(), limit, stale, shard: i64::from(s), shards_total: shards };
            self.run(
                move |_| s,
                false,
                move |mut c, t| {
                    let r = timed(&req, t);
                    async move { c.scan(r).await.map(|r| r.into_inner().items) }
                },
            )
        });
        let mut all: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for items in futures::future::try_join_all(calls).await? {
            all.extend(items.into_iter().map(|kv| (kv.key, kv.value)));
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        if limit > 0 {
            all.truncate(limit as usize);
        }
        Ok(all)
    }
}
