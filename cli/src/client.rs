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
    response.json().await.with_context(|| format!("reading the answer of {url}"))
}

async fn error_of(response: reqwest::Response) -> anyhow::Error {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or(text);
    anyhow!("{message} (HTTP {})", status.as_u16())
}
