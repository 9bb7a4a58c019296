//! The Chaos service: sets failpoints at run time (see [`crate::failpoints`]). It exists only
//! in a `failpoints` build; [`service`] gives `None` elsewhere, so the RPC answers
//! UNIMPLEMENTED and no ordinary node can be made to fail on purpose.

use radiant_proto as pb;
use radiant_proto::chaos_server::ChaosServer;

/// The Chaos service, served only by a `failpoints` build.
pub struct ChaosApi;

/// The service to add to the server, if this build has failpoints.
pub fn service() -> Option<ChaosServer<ChaosApi>> {
    cfg!(feature = "failpoints").then(|| ChaosServer::new(ChaosApi))
}

#[tonic::async_trait]
impl pb::chaos_server::Chaos for ChaosApi {
    async fn set_failpoint(
        &self,
        req: tonic::Request<pb::SetFailpointRequest>,
    ) -> Result<tonic::Response<pb::SetFailpointResponse>, tonic::Status> {
        let req = req.into_inner();
        if !crate::failpoints::known(&req.name) {
            return Err(tonic::Status::invalid_argument(format!("no failpoint named {:?}", req.name)));
        }
        if req.actions.is_empty() {
            fail::remove(&req.name);
        } else {
            fail::cfg(&req.name, &req.actions).map_err(tonic::Status::invalid_argument)?;
        }
        tracing::warn!(name = %req.name, actions = %req.actions, "failpoint set");
        Ok(tonic::Response::new(pb::SetFailpointResponse {}))
    }
}
