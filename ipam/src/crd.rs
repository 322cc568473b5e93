//! Kubernetes custom resources (in progress).
