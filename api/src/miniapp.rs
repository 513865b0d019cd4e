//! The Mini App's static files, embedded in the binary and served under `/miniapp/` with a
//! Content-Security-Policy that allows only our own scripts and Telegram's WebApp script.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use crate::error::{ApiError, ApiPath};

const INDEX: &str = include_str!("../miniapp/index.html");
const APP_JS: &str = include_str!("../miniapp/app.js");
const STYLE: &str = include_str!("../miniapp/style.css");

const CSP: &str = "default-src 'none'; script-src 'self' https://telegram.org; \
    style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; \
    frame-ancestors https://web.telegram.org https://*.telegram.org; base-uri 'none'";

fn file(content_type: &'static str, body: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

pub async fn index() -> Response {
    file("text/html; charset=utf-8", INDEX)
}

pub async fn redirect() -> Redirect {
    Redirect::permanent("/miniapp/")
}

pub async fn asset(ApiPath(name): ApiPath<String>) -> Result<Response, ApiError> {
    match name.as_str() {
        "index.html" => Ok(file("text/html; charset=utf-8", INDEX)),
        "app.js" => Ok(file("text/javascript; charset=utf-8", APP_JS)),
        "style.css" => Ok(file("text/css; charset=utf-8", STYLE)),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such file",
        )),
    }
}
