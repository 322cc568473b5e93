//! The node control socket: `serval node status` asks the running agent over it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::shared::Shared;

/// Requests on the node socket, one JSON object per line.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum NodeRequest {
    /// The node's status; `routes`: with every programmed route.
    Status {
        #[serde(default)]
        routes: bool,
    },
}

/// Answers [`NodeRequest`]s from the agent's published state.
pub struct NodeControl {
    pub shared: Arc<Shared>,
}

impl crate::control_socket::Handler<NodeRequest> for NodeControl {
    async fn handle(&self, req: NodeRequest) -> anyhow::Result<serde_json::Value> {
        match req {
            NodeRequest::Status { routes } => {
                Ok(serde_json::to_value(self.shared.status(routes).await)?)
            }
        }
    }
}
