//! Home of the repository-level tests: the Helm chart rendered by a real `helm`, and the
//! end-to-end chain. The crate has no code of its own; its tests live in `tests/`.
