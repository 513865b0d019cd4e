//! The wgsub API in this process, configured from the binary's own flags (`wgsub-api serve …`)
//! and served by the binary's own `wgsub_api::service::serve_until` — ledger on PostgreSQL,
//! YooKassa client, Kubernetes APIs, drift loop — on a loopback port; plus the two kinds of
//! callers: the Mini App (with initData signed by a bot token made for this run) and YooKassa's
//! webhook (arriving through the trusted reverse proxy with a YooKassa source address in
//! `X-Forwarded-For`).

use std::net::IpAddr;

use clap::Parser as _;
use jiff::Timestamp;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wgsub_api::config::{Cli, Command, ServeArgs};
use wgsub_api::state::state_from_args;
use wgsub_api::{initdata, service};
use wgsub_crds::plans::PlanCatalogue;
use wgsub_ledger::TelegramUser;

/// The reverse proxy in front of the API: this process, on loopback.
const TRUSTED_PROXY: &str = "127.0.0.1/32";

/// A bot token made for this run (never a literal in the repository).
pub fn generate_bot_token() -> String {
    format!(
        "{}:{}",
        7_000_000_000_u64 + u64::from(std::process::id()),
        uuid::Uuid::new_v4().simple()
    )
}

/// The running API.
pub struct ApiServer {
    pub base: String,
    http: reqwest::Client,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

fn serve_args(flags: &[String]) -> ServeArgs {
    let cli = Cli::try_parse_from(
        ["wgsub-api", "serve"]
            .into_iter()
            .map(str::to_owned)
            .chain(flags.iter().cloned()),
    )
    .unwrap_or_else(|e| panic!("wgsub-api does not accept the test's flags: {e}"));
    match cli.command {
        Command::Serve(args) => *args,
        Command::Migrate(_) | Command::Import(_) => unreachable!("parsed as serve"),
    }
}

impl ApiServer {
    /// Parses `wgsub-api serve <flags>` and serves it against `client` on a loopback port.
    pub async fn start(
        client: kube::Client,
        flags: &[String],
        plans: &PlanCatalogue,
        dir: &std::path::Path,
    ) -> ApiServer {
        let plans_file = dir.join("plans.json");
        std::fs::write(
            &plans_file,
            serde_json::to_vec(plans).expect("the plan catalogue serializes"),
        )
        .expect("write the plans file");
        let mut flags = flags.to_vec();
        flags.extend([
            "--plans-file".to_owned(),
            plans_file.display().to_string(),
            "--trusted-proxies".to_owned(),
            TRUSTED_PROXY.to_owned(),
            "--http-addr".to_owned(),
            "127.0.0.1:0".to_owned(),
        ]);
        let args = serve_args(&flags);

        let state = state_from_args(&args, client)
            .await
            .expect("the API state from its settings");
        let stop = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind(args.http_addr)
            .await
            .expect("listen on loopback");
        let address = listener.local_addr().expect("the listening address");
        let serving = service::serve_until(state, listener, args.drift_interval, stop.clone());
        let server = tokio::spawn(async move { serving.await.expect("the API serves") });
        ApiServer {
            base: format!("http://{address}"),
            http: reqwest::Client::new(),
            stop,
            tasks: vec![server],
        }
    }

    /// A Mini App session of `user`, with initData signed now by `bot_token`.
    pub fn mini_app(&self, user: &TelegramUser, bot_token: &str) -> MiniApp {
        let user_json = serde_json::to_string(&serde_json::json!({
            "id": user.id,
            "first_name": user.first_name,
            "last_name": user.last_name,
            "username": user.username,
            "language_code": user.language_code,
        }))
        .expect("the user serializes");
        let auth_date = Timestamp::now().as_second().to_string();
        let query_id = format!("AAH{}", uuid::Uuid::new_v4().simple());
        let init_data = initdata::sign(
            &[
                ("auth_date", &auth_date),
                ("query_id", &query_id),
                ("user", &user_json),
            ],
            bot_token,
        );
        MiniApp {
            http: self.http.clone(),
            base: self.base.clone(),
            authorization: format!("tma {init_data}"),
        }
    }

    /// YooKassa's notification as it arrives through the trusted proxy from `source`.
    pub async fn yookassa_webhook(
        &self,
        source: IpAddr,
        notification: &Value,
    ) -> reqwest::Response {
        self.http
            .post(format!("{}/api/v1/webhooks/yookassa", self.base))
            .header("x-forwarded-for", source.to_string())
            .json(notification)
            .send()
            .await
            .expect("the API answers the webhook")
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop.cancel();
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The Mini App of one user.
pub struct MiniApp {
    http: reqwest::Client,
    base: String,
    authorization: String,
}

impl std::fmt::Debug for MiniApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MiniApp")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl MiniApp {
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .header("authorization", &self.authorization)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.http
            .delete(format!("{}{path}", self.base))
            .header("authorization", &self.authorization)
            .send()
            .await
            .unwrap_or_else(|e| panic!("DELETE {path}: {e}"))
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.send_json(reqwest::Method::POST, path, body).await
    }

    /// A request with a JSON body (`PUT /api/v1/me/location`, say).
    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> reqwest::Response {
        self.http
            .request(method.clone(), format!("{}{path}", self.base))
            .header("authorization", &self.authorization)
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }
}
