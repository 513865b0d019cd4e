//! Shared support of the operator's integration tests: an in-process Kubernetes API server
//! with list and watch ([`fake_api`]).

pub mod fake_api;
