//! HTTP errors: every failure is JSON `{code, message}` with a stable `code`; internal detail
//! is logged, never sent. Also the extractors whose rejections become such errors — the JSON
//! body ([`ApiJson`]: malformed JSON, wrong content type, oversized body), path parameters
//! ([`ApiPath`]: a segment that does not decode) and the query string ([`ApiQuery`]: e.g.
//! `?format=gif`) — and the fallbacks for unknown paths and wrong methods. axum's own
//! extractors answer `text/plain`; handlers use these instead.

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

use crate::initdata::InitDataError;

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `subscription_inactive`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

/// Every `code` a 401 carries, with when: the OpenAPI document lists them on every 401.
pub const UNAUTHORIZED_CODES: [(&str, &str); 2] = [
    (
        UNAUTHORIZED,
        "no `Authorization: tma <initData>`, or initData that is malformed or not signed with the \
         bot token",
    ),
    (
        INIT_DATA_EXPIRED,
        "valid initData older than the maximum age: ask Telegram for fresh initData",
    ),
];
const UNAUTHORIZED: &str = "unauthorized";
const INIT_DATA_EXPIRED: &str = "init_data_expired";

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, UNAUTHORIZED, message)
    }

    /// Refused initData: 401 `init_data_expired` when it was valid but is older than the
    /// maximum age (the Mini App then asks Telegram for fresh initData), 401 `unauthorized`
    /// otherwise.
    pub fn from_init_data(error: InitDataError) -> Self {
        match error {
            InitDataError::Expired => Self::new(
                StatusCode::UNAUTHORIZED,
                INIT_DATA_EXPIRED,
                "the Telegram session has expired: reopen the app",
            ),
            other => Self::unauthorized(other.to_string()),
        }
    }

    pub fn peer_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "peer_not_found", "no such device")
    }

    pub fn subscription_inactive() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "subscription_inactive",
            "the subscription is not active",
        )
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// The database or the Kubernetes API could not be reached.
    pub fn unavailable(what: &str, detail: &dyn std::fmt::Display) -> Self {
        tracing::warn!(%detail, "{what} unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("{what} is unavailable, try again"),
        )
    }

    /// A request names a plan the catalogue does not have: 422 `unknown_plan`.
    pub fn unknown_plan(plan: &str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_plan",
            format!("there is no plan {plan:?}"),
        )
    }

    /// Anything else: logged with detail, answered without.
    pub fn internal(detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    pub fn from_ledger(error: wgsub_ledger::LedgerError) -> Self {
        if error.is_unavailable() {
            Self::unavailable("the database", &error)
        } else {
            Self::internal(&error)
        }
    }

    /// The caches reads are answered from cannot answer now (not synced yet, or their watch
    /// has failed for too long): 503 `cache_not_ready`, never an answer from what is missing.
    pub fn from_cache(error: wgsub_devices::CacheError) -> Self {
        tracing::warn!(%error, "read refused: cache not ready");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "cache_not_ready",
            "the service is starting or resyncing, try again shortly",
        )
    }

    pub fn from_kube(error: kube::Error) -> Self {
        match &error {
            kube::Error::Api(status) if status.code == 404 => Self::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "the resource does not exist",
            ),
            kube::Error::Api(_) => Self::internal(&error),
            _ => Self::unavailable("the Kubernetes API", &error),
        }
    }

    /// A request body problem.
    fn from_body(status: StatusCode, detail: String) -> Self {
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
            _ => "malformed_body",
        };
        let status = if status.is_client_error() {
            status
        } else {
            StatusCode::BAD_REQUEST
        };
        Self::new(status, code, detail)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        Self::from_body(rejection.status(), rejection.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        Self::from_body(rejection.status(), rejection.body_text())
    }
}

/// A request-line problem (path or query) of `status` from axum: 4xx as `code`, anything else
/// (a route declared wrongly) internal.
fn from_request_line(status: StatusCode, code: &'static str, detail: String) -> ApiError {
    if status.is_client_error() {
        ApiError::new(status, code, detail)
    } else {
        ApiError::internal(&detail)
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        from_request_line(rejection.status(), "invalid_path", rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        from_request_line(rejection.status(), "invalid_query", rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code.to_owned(),
            message: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

/// `Json<T>` whose rejections are [`ApiError`]s.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<T>::from_request(request, state).await?;
        Ok(Self(value))
    }
}

/// `Path<T>` whose rejections are [`ApiError`]s (400 `invalid_path`).
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(value) = Path::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// `Query<T>` whose rejections are [`ApiError`]s (400 `invalid_query`).
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(value) = Query::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// The fallback for unknown paths.
pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// The fallback for a known path with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint",
    )
}
