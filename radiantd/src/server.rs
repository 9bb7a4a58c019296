//! Stage one: bring up transport and the supervisor, and nothing else.

use std::future::Future;
use std::sync::Arc;

use radiant_proto::herald_server::HeraldServer;
use radiant_proto::kv_server::KvServer;
use radiant_proto::raft_transport_server::RaftTransportServer;
use radiant_proto::station_server::StationServer;
use radiant_proto::supervisor_server::SupervisorServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::api::HeraldApi;
use crate::api::KvApi;
use crate::api::RaftApi;
use crate::api::StationApi;
use crate::api::SupervisorApi;
use crate::config::Config;
use crate::host::Host;
use crate::identity;
use crate::node::NodeContext;
use crate::order::OrderReplica;
use crate::persist::PersistError;
use crate::phone_home;
use crate::spec::OrderSpec;
use crate::spec::ServiceSpec;
use crate::spec::StationSpec;
use crate::station::Station;
use crate::supervisor::Runner;
use crate::supervisor::ServiceCtx;
use crate::supervisor::ServiceFailure;
use crate::supervisor::Supervisor;
use crate::supervisor::SupervisorError;

const DB_FILE: &str = "radiant.redb";

/// Why the daemon could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The identity file is unreadable.
    #[error("node identity: {0}")]
    Identity(#[from] PersistError),
    /// Another radiantd uses the data dir.
    #[error("data dir {0} is in use by another radiantd")]
    DataDirInUse(String),
    /// The database could not be opened.
    #[error("storage {path}: {reason}")]
    Storage {
        /// Database file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The persisted services could not be relaunched.
    #[error("relaunch: {0}")]
    Relaunch(#[from] SupervisorError),
    /// The gRPC server failed.
    #[error("server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

fn runner(node: Arc<NodeContext>) -> Runner {
    Arc::new(move |spec, svc| {
        let node = node.clone();
        Box::pin(async move {
            match spec {
                ServiceSpec::Station(s) => run_station(&node, s, &svc).await,
                ServiceSpec::PhoneHome(p) => phone_home::run(node, p, svc).await,
                ServiceSpec::OrderReplica(o) => run_order(&node, o, &svc).await,
            }
        })
    })
}

/// Runs a station replica, published in the node context while it runs (the station and
/// Raft APIs find it there), with the member's own heartbeats beside it.
async fn run_station(node: &Arc<NodeContext>, spec: StationSpec, svc: &ServiceCtx) -> Result<(), ServiceFailure> {
    let station = Station::start(&node.host, spec).await?;
    node.set_station(Some(station.clone()));
    let stop = svc.cancel.child_token();
    let heartbeats = tokio::spawn(phone_home::station_member(node.clone(), station.clone(), stop.clone()));
    let result = station.serve(&node.host, svc).await;
    stop.cancel();
    let _ = heartbeats.await;
    node.set_station(None);
    station.stop(&node.host).await;
    result
}

/// Runs an order replica, published in the node context while it runs (the Kv and herald
/// APIs and the heartbeat find it there).
async fn run_order(node: &NodeContext, spec: OrderSpec, svc: &ServiceCtx) -> Result<(), ServiceFailure> {
    let order = spec.order_id;
    let replica = OrderReplica::start(&node.host, spec).await?;
    node.set_order(order, Some(replica.clone()));
    node.host.report_now();
    let result = replica.serve(&node.host, svc).await;
    node.set_order(order, None);
    replica.stop(&node.host).await;
    result
}

/// Runs a node on `listener` until `shutdown` resolves, then stops its services cleanly.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    crate::failpoints::crash_on_failpoint_panic();
    let ident = identity::load_or_create(&config.data_dir, &config.advertise)?;
    let db_path = config.data_dir.join(DB_FILE);
    let db = match crate::disk::open(&db_path) {
        Ok(db) => Arc::new(db),
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
            return Err(ServerError::DataDirInUse(config.data_dir.display().to_string()));
        }
        Err(e) => {
            return Err(ServerError::Storage { path: db_path.display().to_string(), reason: e.to_string() });
        }
    };
    tracing::info!(id = ident.id, name = %config.name, addr = %config.advertise, "radiantd starting");

    let node = Arc::new(NodeContext::new(Arc::new(Host::new(config.clone(), ident.id, ident.incarnation, db))));
    let supervisor = Supervisor::new(&config.data_dir, runner(node.clone()));

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(1)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(2)))
        .add_service(SupervisorServer::new(SupervisorApi::new(node.clone(), supervisor.clone())))
        .add_service(StationServer::new(StationApi::new(node.clone())))
        .add_service(HeraldServer::new(HeraldApi::new(node.clone())))
        .add_service(RaftTransportServer::new(RaftApi::new(node.clone())).max_decoding_message_size(256 * 1024 * 1024))
        .add_optional_service(crate::api::chaos_api::service())
        .add_service(
            KvServer::new(KvApi::new(node.clone()))
                .max_decoding_message_size(8 * 1024 * 1024)
                .max_encoding_message_size(64 * 1024 * 1024),
        )
        .serve_with_incoming_shutdown(incoming(listener), async {
            let _ = stop_rx.await;
        });
    let server = tokio::spawn(server);

    let relaunched = supervisor.relaunch()?;
    node.set_cluster_id(supervisor.cluster_id());
    node.set_ready(true);
    notify_systemd("READY=1");
    tracing::info!(relaunched, "radiantd ready");

    let mut server = server;
    let early = tokio::select! {
        _ = shutdown => { tracing::info!("shutting down"); None }
        r = &mut server => Some(r),
    };
    node.set_ready(false);
    notify_systemd("STOPPING=1");
    supervisor.shutdown().await;
    let served = match early {
        Some(r) => r,
        None => {
            let _ = stop_tx.send(());
            server.await
        }
    };
    match served {
        Ok(r) => r?,
        Err(e) => tracing::error!("server task: {e}"),
    }
    tracing::info!("radiantd stopped");
    Ok(())
}

/// Accepted connections with Nagle's algorithm off: the builder's `tcp_nodelay` applies only
/// to listeners it binds itself, and with Nagle on, small replies wait for delayed ACKs
/// (about 40 ms on Linux).
fn incoming(listener: TcpListener) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|s| {
        let s = s?;
        s.set_nodelay(true)?;
        Ok(s)
    })
}

/// Tells systemd (Type=notify) about our state; a no-op outside systemd.
fn notify_systemd(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::SocketAddr;
    use std::os::unix::net::UnixDatagram;
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name.as_bytes()),
        None => SocketAddr::from_pathname(&path),
    };
    let sent = addr.and_then(|a| UnixDatagram::unbound().and_then(|s| s.send_to_addr(state.as_bytes(), &a)));
    if let Err(e) = sent {
        tracing::warn!("cannot notify systemd at {path}: {e}");
    }
}
