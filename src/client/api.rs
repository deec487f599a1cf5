//! The node's native API as the client uses it: one agent, the token in the `Authorization`
//! header only, and every non-success status turned into a [`ClientError`] here.

use std::io::Read;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use ureq::http::Response;
use ureq::{Body, RequestBuilder};

use super::{ClientError, Opts};

/// Path characters left as they are in a name; everything else is percent-encoded.
const NAME: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b'/');

/// Error bodies are small; a larger one is cut (it is only shown).
const ERROR_BODY_MAX: u64 = 64 * 1024;

#[derive(Clone)]
pub struct Api {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// What HEAD says about a stored file.
pub struct Head {
    pub size: u64,
    /// The content id (the ETag without quotes).
    pub id: String,
}

/// Where a resumable upload stands.
pub struct TusState {
    pub offset: u64,
    /// Set once the node stored the file.
    pub id: Option<String>,
}

pub fn encode_name(name: &str) -> String {
    utf8_percent_encode(name, NAME).to_string()
}

impl Api {
    pub fn new(opts: &Opts) -> Result<Api, ClientError> {
        let base = opts.node.trim().trim_end_matches('/').to_owned();
        match url::Url::parse(&base) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
            _ => {
                return Err(ClientError::Local(format!(
                    "--node {base:?} is not a URL like http://host:8080"
                )));
            }
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            // A transfer may take long; a node that stops answering is noticed by the OS
            // closing the connection, or by this while waiting for an answer's head.
            .timeout_recv_response(Some(Duration::from_secs(600)))
            .build()
            .into();
        Ok(Api { base, token: opts.api_token.clone().filter(|t| !t.is_empty()), agent })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn file_path(name: &str) -> String {
        format!("/api/v1/files/{}", encode_name(name))
    }

    fn auth<B>(&self, req: RequestBuilder<B>) -> RequestBuilder<B> {
        match &self.token {
            Some(t) => req.header("Authorization", format!("Bearer {t}")),
            None => req,
        }
    }

    fn transport(&self, e: ureq::Error) -> ClientError {
        ClientError::Unreachable { url: self.base.clone(), reason: e.to_string() }
    }

    /// A non-success answer as an error; `subject` names what a 404 is about.
    pub fn refused(&self, mut res: Response<Body>, subject: &str) -> ClientError {
        let status = res.status().as_u16();
        let mut text = String::new();
        let _ = res.body_mut().as_reader().take(ERROR_BODY_MAX).read_to_string(&mut text);
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| text.trim().to_owned());
        match status {
            401 => ClientError::Token,
            // An older node without the route (move, copy, shares) says so rather than "no file".
            404 if message == "no such route" => ClientError::Refused(
                "the node does not offer this operation (no such route); upgrade it".into(),
            ),
            404 => ClientError::NotFound(subject.to_owned()),
            507 => ClientError::Full(message),
            412 => ClientError::Refused(format!("{subject}: refused, a precondition failed ({message})")),
            _ => ClientError::Refused(format!("the node answered {status}: {message}")),
        }
    }

    fn ok(
        &self,
        res: Result<Response<Body>, ureq::Error>,
        subject: &str,
    ) -> Result<Response<Body>, ClientError> {
        let res = res.map_err(|e| self.transport(e))?;
        if res.status().is_success() { Ok(res) } else { Err(self.refused(res, subject)) }
    }

    fn read_json(&self, mut res: Response<Body>) -> Result<serde_json::Value, ClientError> {
        let text = res.body_mut().read_to_string().map_err(|e| self.transport(e))?;
        serde_json::from_str(&text)
            .map_err(|e| ClientError::Refused(format!("the node's answer is not JSON: {e}")))
    }

    pub fn get_json(&self, path: &str, query: &[(&str, String)]) -> Result<serde_json::Value, ClientError> {
        let mut req = self.auth(self.agent.get(self.url(path)));
        for (k, v) in query {
            req = req.query(*k, v);
        }
        let res = self.ok(req.call(), path)?;
        self.read_json(res)
    }

    pub fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
        subject: &str,
    ) -> Result<serde_json::Value, ClientError> {
        let req = self.auth(self.agent.post(self.url(path))).header("Content-Type", "application/json");
        let res = self.ok(req.send(body.to_string().as_bytes()), subject)?;
        self.read_json(res)
    }

    /// The stored file's size and id, `None` when there is no such name.
    pub fn head_file(&self, name: &str) -> Result<Option<Head>, ClientError> {
        let res = self.auth(self.agent.head(self.url(&Self::file_path(name)))).call();
        let res = res.map_err(|e| self.transport(e))?;
        if res.status() == 404 {
            return Ok(None);
        }
        if !res.status().is_success() {
            return Err(self.refused(res, name));
        }
        Ok(Some(head_of(&res)))
    }

    pub fn delete_file(&self, name: &str) -> Result<(), ClientError> {
        self.ok(self.auth(self.agent.delete(self.url(&Self::file_path(name)))).call(), name)?;
        Ok(())
    }

    /// `GET /health`: whether it is ok, and what it says.
    pub fn health(&self) -> Result<(bool, String), ClientError> {
        let mut res = self.auth(self.agent.get(self.url("/health"))).call().map_err(|e| self.transport(e))?;
        let ok = res.status().is_success();
        if res.status() == 401 {
            return Err(ClientError::Token);
        }
        let mut text = String::new();
        let _ = res.body_mut().as_reader().take(ERROR_BODY_MAX).read_to_string(&mut text);
        let text = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| text.trim().to_owned());
        Ok((ok, text))
    }

    /// Plain `PUT` of a whole body; returns the stored id.
    pub fn put_file(
        &self,
        name: &str,
        body: &mut dyn Read,
        mtime: Option<f64>,
    ) -> Result<String, ClientError> {
        let mut req = self.auth(self.agent.put(self.url(&Self::file_path(name))));
        if let Some(t) = mtime {
            req = req.header("X-DistStore-Mtime", format!("{t:.3}"));
        }
        let res = self.ok(req.send(ureq::SendBody::from_reader(body)), name)?;
        let answer = self.read_json(res)?;
        answer["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ClientError::Refused("the node's answer has no id".into()))
    }

    /// Streams a file from byte `from` on. Returns the answer when it is the content from
    /// there (`206`, or `200` when `from` is 0).
    pub fn get_file(&self, name: &str, from: u64, id: &str) -> Result<Response<Body>, ClientError> {
        let mut req = self.auth(self.agent.get(self.url(&Self::file_path(name))));
        if from > 0 {
            // If-Range: the rest only if it is still the same content, else the whole file.
            req = req.header("Range", format!("bytes={from}-")).header("If-Range", format!("\"{id}\""));
        }
        self.ok(req.call(), name)
    }

    // Resumable uploads (tus 1.0.0).

    /// Creates an upload; returns its URL.
    pub fn tus_create(&self, name: &str, length: u64, mtime: Option<f64>) -> Result<String, ClientError> {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let mut meta = format!("name {}", b64(name));
        if let Some(t) = mtime {
            meta.push_str(&format!(",mtime {}", b64(&format!("{t:.3}"))));
        }
        let req = self
            .auth(self.agent.post(self.url("/api/v1/uploads")))
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", length.to_string())
            .header("Upload-Metadata", meta);
        let res = self.ok(req.send_empty(), name)?;
        let location =
            res.headers().get("Location").and_then(|v| v.to_str().ok()).ok_or_else(|| {
                ClientError::Refused("the node created an upload without a Location".into())
            })?;
        Ok(if location.starts_with('/') { self.url(location) } else { location.to_owned() })
    }

    /// Where an upload stands; `None` when the node no longer has it.
    pub fn tus_state(&self, url: &str) -> Result<Option<TusState>, ClientError> {
        let res = self.auth(self.agent.head(url)).header("Tus-Resumable", "1.0.0").call();
        let res = res.map_err(|e| self.transport(e))?;
        if matches!(res.status().as_u16(), 404 | 410) {
            return Ok(None);
        }
        if !res.status().is_success() {
            return Err(self.refused(res, url));
        }
        Ok(Some(tus_state_of(&res)))
    }

    /// Sends bytes at `offset`. `Err(Ok(res))`-like cases are folded: a `409` (offset moved or
    /// the upload busy) is returned as `Ok(None)` for the caller to ask again.
    pub fn tus_patch(
        &self,
        url: &str,
        offset: u64,
        body: &mut dyn Read,
    ) -> Result<Option<TusState>, ClientError> {
        let req = self
            .auth(self.agent.patch(url))
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Offset", offset.to_string())
            .header("Content-Type", "application/offset+octet-stream");
        let res = req.send(ureq::SendBody::from_reader(body)).map_err(|e| self.transport(e))?;
        match res.status().as_u16() {
            200..=299 => Ok(Some(tus_state_of(&res))),
            409 => Ok(None),
            _ => Err(self.refused(res, url)),
        }
    }
}

fn header<'a>(res: &'a Response<Body>, name: &str) -> Option<&'a str> {
    res.headers().get(name).and_then(|v| v.to_str().ok())
}

pub fn head_of(res: &Response<Body>) -> Head {
    Head {
        size: header(res, "Content-Length").and_then(|v| v.parse().ok()).unwrap_or(0),
        id: header(res, "ETag").unwrap_or_default().trim_matches('"').to_owned(),
    }
}

fn tus_state_of(res: &Response<Body>) -> TusState {
    TusState {
        offset: header(res, "Upload-Offset").and_then(|v| v.parse().ok()).unwrap_or(0),
        id: header(res, "X-DistStore-Id").map(str::to_owned),
    }
}
