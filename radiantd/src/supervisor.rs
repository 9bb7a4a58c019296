//! The supervisor: runs named services on request, restarts the ones that crash, and
//! persists what it runs so a restarted radiantd relaunches it with no operator (the ArangoDB
//! Starter's relaunch).
//!
//! A service that fails more than [`MAX_RECENT_FAILURES`] times within [`FAILURE_WINDOW`] is
//! left `failed` instead of being restarted forever; `radiantctl` shows its last error.

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::Weak;
use std::time::Duration;
use std::time::Instant;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::persist;
use crate::persist::PersistError;
use crate::spec::ServiceSpec;

const SERVICES_FILE: &str = "services.json";
const SERVICES_VERSION: u32 = 1;

/// Failures within [`FAILURE_WINDOW`] after which a service is given up.
pub const MAX_RECENT_FAILURES: usize = 5;
/// The window failures are counted in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Why a service stopped running.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ServiceFailure(pub String);

/// Starts a service; returns when the service ends (on cancellation, or by failing).
pub type Runner = Arc<dyn Fn(ServiceSpec, ServiceCtx) -> BoxFuture<'static, Result<(), ServiceFailure>> + Send + Sync>;

/// A supervisor failure.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The node already belongs to another cluster.
    #[error("this node belongs to cluster {existing}, not {requested}")]
    ClusterMismatch {
        /// The node's cluster.
        existing: String,
        /// The one asked for.
        requested: String,
    },
    /// The service runs with different parameters that cannot be changed in place.
    #[error("{name} already runs with a different spec; stop it first")]
    Conflict {
        /// Service name.
        name: String,
    },
    /// The services file could not be written or read.
    #[error(transparent)]
    Persist(#[from] PersistError),
}

/// What a running service may ask of its supervisor.
#[derive(Clone)]
pub struct ServiceCtx {
    /// Cancelled when the service must stop.
    pub cancel: CancellationToken,
    /// Whether the coordinator acknowledged this node (phone-home), as persisted.
    pub acknowledged: bool,
    name: &'static str,
    supervisor: Weak<Supervisor>,
}

impl ServiceCtx {
    /// Persists the coordinator's acknowledgement, so a restart does not start from scratch.
    pub fn set_acknowledged(&self, acknowledged: bool) {
        if let Some(s) = self.supervisor.upgrade()
            && let Err(e) = s.set_acknowledged(self.name, acknowledged)
        {
            tracing::error!(service = self.name, "cannot persist acknowledgement: {e}");
        }
    }
}

impl ServiceCtx {
    /// Persists a new spec for this running service without restarting it (phone-home learns
    /// the station's current addresses), so a restart uses it.
    pub fn update_spec(&self, spec: ServiceSpec) {
        if let Some(s) = self.supervisor.upgrade()
            && let Err(e) = s.update_spec(self.name, spec)
        {
            tracing::error!(service = self.name, "cannot persist the service's spec: {e}");
        }
    }
}

/// A service's state as reported by `List`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceStatus {
    /// Service name.
    pub name: String,
    /// `running`, `restarting`, `failed` or `stopped`.
    pub state: &'static str,
    /// Restarts so far.
    pub restarts: u32,
    /// The last failure.
    pub last_error: String,
    /// Its spec.
    pub spec: ServiceSpec,
    /// phone-home: acknowledged by the coordinator.
    pub acknowledged: bool,
}

#[derive(Serialize, Deserialize, Default)]
struct Persisted {
    services: Vec<PersistedService>,
}

#[derive(Serialize, Deserialize, Clone)]
struct PersistedService {
    spec: ServiceSpec,
    #[serde(default)]
    acknowledged: bool,
}

struct Entry {
    spec: ServiceSpec,
    acknowledged: bool,
    status: Arc<Mutex<(&'static str, u32, String)>>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// The supervisor of one node.
pub struct Supervisor {
    path: PathBuf,
    runner: Runner,
    entries: Mutex<BTreeMap<&'static str, Entry>>,
    me: Weak<Supervisor>,
}

/// Whether `spawn` started something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spawned {
    /// Started now.
    Started,
    /// Was already running with this spec.
    AlreadyRunning,
}

impl Supervisor {
    /// A supervisor persisting to `data_dir`; call [`Supervisor::relaunch`] to start what it
    /// ran before.
    pub fn new(data_dir: &std::path::Path, runner: Runner) -> Arc<Self> {
        Arc::new_cyclic(|me| Supervisor {
            path: data_dir.join(SERVICES_FILE),
            runner,
            entries: Mutex::new(BTreeMap::new()),
            me: me.clone(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts every persisted service. Returns how many.
    pub fn relaunch(&self) -> Result<usize, SupervisorError> {
        let persisted: Persisted = persist::load(&self.path, SERVICES_VERSION)?.unwrap_or_default();
        let n = persisted.services.len();
        let mut entries = self.lock();
        for s in persisted.services {
            tracing::info!(service = s.spec.name(), "relaunching");
            let entry = self.start(s.spec, s.acknowledged);
            entries.insert(entry.spec.name(), entry);
        }
        Ok(n)
    }

    /// The cluster this node belongs to, if any service says so.
    pub fn cluster_id(&self) -> Option<String> {
        self.lock().values().next().map(|e| e.spec.cluster_id().to_string())
    }

    /// Starts `spec` unless it already runs. A node belongs to one cluster: a spec of another
    /// cluster is refused.
    pub fn spawn(&self, spec: ServiceSpec) -> Result<Spawned, SupervisorError> {
        let mut entries = self.lock();
        if let Some(existing) = entries.values().next()
            && existing.spec.cluster_id() != spec.cluster_id()
        {
            return Err(SupervisorError::ClusterMismatch {
                existing: existing.spec.cluster_id().to_string(),
                requested: spec.cluster_id().to_string(),
            });
        }
        let name = spec.name();
        let mut acknowledged = false;
        if let Some(e) = entries.get(name) {
            if e.spec == spec {
                return Ok(Spawned::AlreadyRunning);
            }
            if matches!(spec, ServiceSpec::Station(_)) {
                return Err(SupervisorError::Conflict { name: name.into() });
            }
            // phone-home with new station addresses: restart it with them.
            acknowledged = e.acknowledged;
            if let Some(old) = entries.remove(name) {
                old.cancel.cancel();
            }
        }
        let entry = self.start(spec, acknowledged);
        entries.insert(name, entry);
        self.persist(&entries)?;
        Ok(Spawned::Started)
    }

    /// Stops `name` and forgets it. Returns whether it was running.
    pub async fn stop(&self, name: &str) -> Result<bool, SupervisorError> {
        let entry = {
            let mut entries = self.lock();
            let Some(key) = entries.keys().find(|k| **k == name).copied() else {
                return Ok(false);
            };
            let e = entries.remove(key);
            self.persist(&entries)?;
            e
        };
        if let Some(e) = entry {
            e.cancel.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), e.task).await;
        }
        Ok(true)
    }

    /// Stops every service without forgetting them (the node is shutting down).
    pub async fn shutdown(&self) {
        let tasks: Vec<_> = {
            let mut entries = self.lock();
            entries
                .values_mut()
                .map(|e| {
                    e.cancel.cancel();
                    std::mem::replace(&mut e.task, tokio::spawn(async {}))
                })
                .collect()
        };
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }

    /// The services and their states.
    pub fn list(&self) -> Vec<ServiceStatus> {
        self.lock()
            .values()
            .map(|e| {
                let (state, restarts, last_error) = e.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
                ServiceStatus {
                    name: e.spec.name().to_string(),
                    state,
                    restarts,
                    last_error,
                    spec: e.spec.clone(),
                    acknowledged: e.acknowledged,
                }
            })
            .collect()
    }

    fn update_spec(&self, name: &str, spec: ServiceSpec) -> Result<(), SupervisorError> {
        let mut entries = self.lock();
        match entries.iter_mut().find(|(k, _)| **k == name) {
            Some((_, e)) if e.spec != spec && e.spec.name() == spec.name() => e.spec = spec,
            _ => return Ok(()),
        }
        self.persist(&entries)
    }

    fn set_acknowledged(&self, name: &str, acknowledged: bool) -> Result<(), SupervisorError> {
        let mut entries = self.lock();
        match entries.iter_mut().find(|(k, _)| **k == name) {
            Some((_, e)) if e.acknowledged != acknowledged => e.acknowledged = acknowledged,
            _ => return Ok(()),
        }
        self.persist(&entries)
    }

    fn persist(&self, entries: &BTreeMap<&'static str, Entry>) -> Result<(), SupervisorError> {
        let p = Persisted {
            services: entries
                .values()
                .map(|e| PersistedService { spec: e.spec.clone(), acknowledged: e.acknowledged })
                .collect(),
        };
        persist::save(&self.path, SERVICES_VERSION, &p)?;
        Ok(())
    }

    fn start(&self, spec: ServiceSpec, acknowledged: bool) -> Entry {
        let cancel = CancellationToken::new();
        let status = Arc::new(Mutex::new(("running", 0u32, String::new())));
        let ctx = ServiceCtx { cancel: cancel.clone(), acknowledged, name: spec.name(), supervisor: self.me.clone() };
        let task = tokio::spawn(supervise(self.runner.clone(), spec.clone(), ctx, status.clone()));
        Entry { spec, acknowledged, status, cancel, task }
    }
}

/// Runs a service until it is cancelled, restarting it on failure or panic.
async fn supervise(
    runner: Runner,
    spec: ServiceSpec,
    mut ctx: ServiceCtx,
    status: Arc<Mutex<(&'static str, u32, String)>>,
) {
    let set = |state: &'static str, err: Option<String>| {
        let mut s = status.lock().unwrap_or_else(|p| p.into_inner());
        s.0 = state;
        if let Some(e) = err {
            s.1 += u32::from(state == "restarting");
            s.2 = e;
        }
    };
    let mut failures: VecDeque<Instant> = VecDeque::new();
    loop {
        set("running", None);
        let outcome = std::panic::AssertUnwindSafe(runner(spec.clone(), ctx.clone())).catch_unwind().await;
        if ctx.cancel.is_cancelled() {
            set("stopped", None);
            return;
        }
        let err = match outcome {
            Ok(Ok(())) => "service exited".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "service panicked".to_string(),
        };
        let now = Instant::now();
        failures.push_back(now);
        while failures.front().is_some_and(|t| now.duration_since(*t) > FAILURE_WINDOW) {
            failures.pop_front();
        }
        if failures.len() > MAX_RECENT_FAILURES {
            tracing::error!(service = spec.name(), "giving up after {} failures: {err}", failures.len());
            set("failed", Some(err));
            return;
        }
        tracing::warn!(service = spec.name(), "failed, restarting: {err}");
        set("restarting", Some(err));
        let backoff = Duration::from_millis(200 * (1 << failures.len().min(5)));
        tokio::select! {
            _ = ctx.cancel.cancelled() => { set("stopped", None); return; }
            _ = tokio::time::sleep(backoff) => {}
        }
        // A restart sees the latest persisted acknowledgement.
        if let Some(s) = ctx.supervisor.upgrade() {
            ctx.acknowledged = s.list().iter().any(|st| st.name == spec.name() && st.acknowledged);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::spec::PhoneHomeSpec;

    fn phone_home(cluster: &str) -> ServiceSpec {
        ServiceSpec::PhoneHome(PhoneHomeSpec { cluster_id: cluster.into(), station: vec!["127.0.0.1:1".into()] })
    }

    fn waiting_runner() -> Runner {
        Arc::new(|_, ctx: ServiceCtx| {
            Box::pin(async move {
                ctx.cancel.cancelled().await;
                Ok(())
            })
        })
    }

    #[tokio::test]
    async fn spawn_is_idempotent_persisted_and_cluster_bound() {
        let dir = tempfile::tempdir().unwrap();
        let s = Supervisor::new(dir.path(), waiting_runner());
        assert_eq!(s.spawn(phone_home("a")).unwrap(), Spawned::Started);
        assert_eq!(s.spawn(phone_home("a")).unwrap(), Spawned::AlreadyRunning);
        let err = s.spawn(phone_home("b")).unwrap_err();
        assert_eq!(err.to_string(), "this node belongs to cluster a, not b");
        s.set_acknowledged("phone-home", true).unwrap();
        s.shutdown().await;

        let again = Supervisor::new(dir.path(), waiting_runner());
        assert_eq!(again.relaunch().unwrap(), 1);
        let list = again.list();
        assert_eq!(list.len(), 1);
        assert!(list[0].acknowledged, "acknowledgement survives a restart");
        assert!(again.stop("phone-home").await.unwrap());
        assert_eq!(Supervisor::new(dir.path(), waiting_runner()).relaunch().unwrap(), 0);
    }

    #[tokio::test]
    async fn crashing_service_is_restarted_then_given_up() {
        let dir = tempfile::tempdir().unwrap();
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        let runner: Runner = Arc::new(move |_, _| {
            r.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Err(ServiceFailure("boom".into())) })
        });
        tokio::time::pause();
        let s = Supervisor::new(dir.path(), runner);
        s.spawn(phone_home("a")).unwrap();
        for _ in 0..200 {
            if s.list()[0].state == "failed" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let st = &s.list()[0];
        assert_eq!(st.state, "failed");
        assert_eq!(st.last_error, "boom");
        assert_eq!(runs.load(Ordering::SeqCst) as usize, MAX_RECENT_FAILURES + 1);
    }
}
