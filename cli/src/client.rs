//! HTTP client for the master and agent APIs; turns error responses into their message.

use anyhow::{Context, anyhow};
use serde::de::DeserializeOwned;

pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    pub fn new(base: &str) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder().build().context("building the HTTP client")?;
        Ok(Client { http, base: base.trim_end_matches('/').to_owned() })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let response = self.http.get(self.url(path)).send().await.with_context(|| self.unreachable())?;
        decode(response).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<T> {
        let response = self.http.post(self.url(path)).json(body).send().await.with_context(|| self.unreachable())?;
        decode(response).await
    }

    pub async fn put<T: DeserializeOwned>(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<T> {
        let response = self.http.put(self.url(path)).json(body).send().await.with_context(|| self.unreachable())?;
        decode(response).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let response = self.http.delete(self.url(path)).send().await.with_context(|| self.unreachable())?;
        decode(response).await
    }

    /// A streaming GET (logs, events); the response is checked for an error status.
    pub async fn stream(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        let response = self.http.get(self.url(path)).send().await.with_context(|| self.unreachable())?;
        if response.status().is_success() { Ok(response) } else { Err(error_of(response).await) }
    }

    fn unreachable(&self) -> String {
        format!("cannot reach {} (set --master or ATOLL_MASTER)", self.base)
    }
}

async fn decode<T: DeserializeOwned>(response: reqwest::Response) -> anyhow::Result<T> {
    if !response.status().is_success() {
        return Err(error_of(response).await);
    }
    let url = response.url().to_string();
    let bytes = response.bytes().await.with_context(|| format!("reading the answer of {url}"))?;
    // Some answers (202 Accepted) have no body.
    let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
    serde_json::from_slice(bytes).with_context(|| format!("reading the answer of {url}"))
}

/// The message of an error answer: Atoll's `{"error"}`, or Marathon's `{"message",
/// "details": [{"path", "errors"}]}` with every field named.
async fn error_of(response: reqwest::Response) -> anyhow::Error {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let value = serde_json::from_str::<serde_json::Value>(&text).ok();
    let mut message = value
        .as_ref()
        .and_then(|v| v.get("error").or_else(|| v.get("message")))
        .and_then(|m| m.as_str())
        .map(str::to_owned)
        .unwrap_or(text);
    if let Some(details) = value.as_ref().and_then(|v| v.get("details")).and_then(|d| d.as_array()) {
        for detail in details {
            let path = detail["path"].as_str().unwrap_or("");
            for error in detail["errors"].as_array().into_iter().flatten() {
                message.push_str(&format!("\n  {path}: {}", error.as_str().unwrap_or("")));
            }
        }
    }
    anyhow!("{message} (HTTP {})", status.as_u16())
}
