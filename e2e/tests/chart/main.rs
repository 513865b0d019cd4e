//! Tests of the Helm chart `charts/wgsub`, rendered by a real `helm` (path in `WGSUB_HELM`):
//! lint, rendering with default values and with every option on, the pod rules, the alerts
//! (checked and unit-tested by promtool), RBAC against the binaries' `api-calls.yaml`, the values
//! schema, the chart's copy of the CRDs, and the chart installed, upgraded and uninstalled on a
//! real API server.

mod alerts;
mod backup;
mod crds;
mod dashboard;
mod images;
mod install;
mod install_vps;
mod rbac;
mod release;
mod render;
mod rules;
mod schema;
mod settings;
mod support;
