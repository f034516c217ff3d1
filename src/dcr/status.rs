//! CDR Register status at registration: the SSA's software product and data recipient, judged by
//! `register_status` from the lists it polls.

use std::sync::Arc;

use crate::dcr::ssa::Ssa;
use crate::error::{ProxyError, RegisterCheck};
use crate::register_status::RegisterGate;

/// The settings live with the poller; `[profile]` carries them under this name.
pub use crate::register_status::RegisterStatusConfig as StatusConfig;

pub struct StatusChecker {
    gate: Arc<RegisterGate>,
}

impl StatusChecker {
    pub fn new(gate: Arc<RegisterGate>) -> Self {
        StatusChecker { gate }
    }

    /// Refuses an SSA whose software product (or, through its `legal_entity_id`, data recipient) the Register
    /// does not list as ACTIVE: unapproved_software_statement; or, when the lists are too old, what the policy
    /// says.
    pub async fn admit(&self, ssa: &Ssa) -> Result<(), ProxyError> {
        let legal_entity_id = ssa
            .claims
            .get("legal_entity_id")
            .and_then(serde_json::Value::as_str);
        self.gate
            .check_registration(&ssa.software_id, legal_entity_id)
            .await
    }

    /// Refuses management of a client whose software product or data recipient the Register no longer lists
    /// as ACTIVE. Called only once the caller's token is proven to be this client's: before that, the answer
    /// would tell anyone whether a ClientId exists and how the Register rates it.
    pub async fn admit_client(&self, client_id: &str) -> Result<(), ProxyError> {
        self.gate
            .check_client(client_id, RegisterCheck::Management)
            .await
    }
}
