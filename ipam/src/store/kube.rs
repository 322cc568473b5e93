//! The Kubernetes store (in progress).
use crate::error::StoreError;
pub struct KubeStore;
impl KubeStore {
    pub async fn from_environment() -> Result<std::sync::Arc<dyn super::Store>, StoreError> {
        Err(StoreError::Config("not yet".into()))
    }
}
