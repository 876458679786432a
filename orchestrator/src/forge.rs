//! Pull requests on GitHub and merge requests on GitLab, through their REST APIs: find the
//! open one of a branch, open one, update one. The forge's own rate limits are honoured:
//! a 429, or a 403 that says the limit is spent, waits out `Retry-After` (or the reset
//! time) and asks again.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Most a forge's `Retry-After` is waited for at once.
const MOST_WAIT: Duration = Duration::from_secs(15 * 60);
/// Most times one request is asked again after the forge limited it or failed.
const MOST_TRIES: u32 = 6;

/// Which forge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    GitHub,
    GitLab,
}

impl Kind {
    /// `github` or `gitlab`.
    pub fn parse(text: &str) -> Option<Kind> {
        match text {
            "github" => Some(Kind::GitHub),
            "gitlab" => Some(Kind::GitLab),
            _ => None,
        }
    }

    fn token_vars(self) -> &'static [&'static str] {
        match self {
            Kind::GitHub => &["GITHUB_TOKEN", "GH_TOKEN"],
            Kind::GitLab => &["GITLAB_TOKEN"],
        }
    }

    fn word(self) -> &'static str {
        match self {
            Kind::GitHub => "pull request",
            Kind::GitLab => "merge request",
        }
    }
}

/// A repository on a forge, as its remote's URL names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub host: String,
    /// `owner/name` (GitLab: the whole namespace path).
    pub path: String,
}

/// The host and repository path of a remote URL: `https://host/owner/name.git`,
/// `git@host:owner/name.git`, `ssh://git@host/owner/name`.
pub fn place_of(url: &str) -> Option<Place> {
    let rest = if let Some((scheme, rest)) = url.split_once("://") {
        if !matches!(scheme, "https" | "http" | "ssh" | "git") {
            return None;
        }
        rest
    } else if !url.starts_with('/') && url.contains(':') {
        // scp-like: user@host:path
        return url.split_once(':').and_then(|(host, path)| {
            let host = host.rsplit('@').next()?.to_owned();
            let path = path.trim_matches('/').trim_end_matches(".git").to_owned();
            (path.contains('/')).then_some(Place { host, path })
        });
    } else {
        return None;
    };
    let (authority, path) = rest.split_once('/')?;
    let host = authority.rsplit('@').next()?;
    let host = host.split(':').next()?.to_owned();
    let path = path.trim_matches('/').trim_end_matches(".git").to_owned();
    path.contains('/').then_some(Place { host, path })
}

/// The forge a host is, by its name.
pub fn kind_of(host: &str) -> Option<Kind> {
    if host == "github.com" || host.contains("github") {
        Some(Kind::GitHub)
    } else if host == "gitlab.com" || host.contains("gitlab") {
        Some(Kind::GitLab)
    } else {
        None
    }
}

/// A pull or merge request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Request {
    pub number: u64,
    pub url: String,
}

/// A client of one forge, for one repository.
#[derive(Debug, Clone)]
pub struct Forge {
    kind: Kind,
    api: String,
    token: String,
    place: Place,
    http: reqwest::Client,
}

impl Forge {
    /// The client for `place` on `kind`, with its token from the environment and its API's
    /// root from `GITHUB_API_URL` / `GITLAB_API_URL` (else the host's own).
    pub fn new(kind: Kind, place: Place) -> Result<Forge, String> {
        let token = kind
            .token_vars()
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|t| !t.trim().is_empty()))
            .ok_or_else(|| {
                format!(
                    "--pr needs a token for {}: set {}",
                    place.host,
                    kind.token_vars().join(" or ")
                )
            })?;
        let api = match kind {
            Kind::GitHub => std::env::var("GITHUB_API_URL").ok().unwrap_or_else(|| {
                if place.host == "github.com" {
                    "https://api.github.com".into()
                } else {
                    format!("https://{}/api/v3", place.host)
                }
            }),
            Kind::GitLab => std::env::var("GITLAB_API_URL")
                .or_else(|_| std::env::var("CI_API_V4_URL"))
                .unwrap_or_else(|_| format!("https://{}/api/v4", place.host)),
        };
        let http = reqwest::Client::builder()
            .user_agent(concat!("braid/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Forge {
            kind,
            api: api.trim_end_matches('/').to_owned(),
            token: token.trim().to_owned(),
            place,
            http,
        })
    }

    /// "pull request" or "merge request".
    pub fn word(&self) -> &'static str {
        self.kind.word()
    }

    fn project(&self) -> String {
        self.place.path.replace('/', "%2F")
    }

    fn owner(&self) -> &str {
        self.place.path.split('/').next().unwrap_or_default()
    }

    /// The open request whose head is `branch`.
    pub async fn find(&self, branch: &str) -> Result<Option<Request>, String> {
        let (path, query): (String, Vec<(&str, String)>) = match self.kind {
            Kind::GitHub => (
                format!("/repos/{}/pulls", self.place.path),
                vec![
                    ("head", format!("{}:{branch}", self.owner())),
                    ("state", "open".into()),
                ],
            ),
            Kind::GitLab => (
                format!("/projects/{}/merge_requests", self.project()),
                vec![
                    ("source_branch", branch.to_owned()),
                    ("state", "opened".into()),
                ],
            ),
        };
        let found = self.call(Method::GET, &path, &query, None).await?;
        Ok(found
            .as_array()
            .and_then(|list| list.first())
            .and_then(|r| self.request_of(r)))
    }

    /// Opens a request from `branch` into `base`.
    pub async fn create(
        &self,
        branch: &str,
        base: &str,
        title: &str,
        body: &str,
    ) -> Result<Request, String> {
        let (path, payload) = match self.kind {
            Kind::GitHub => (
                format!("/repos/{}/pulls", self.place.path),
                json!({"title": title, "head": branch, "base": base, "body": body}),
            ),
            Kind::GitLab => (
                format!("/projects/{}/merge_requests", self.project()),
                json!({"title": title, "source_branch": branch, "target_branch": base, "description": body}),
            ),
        };
        let made = self.call(Method::POST, &path, &[], Some(payload)).await?;
        self.request_of(&made)
            .ok_or_else(|| format!("the forge's answer names no {}: {made}", self.word()))
    }

    /// Gives request `number` a new title and body.
    pub async fn update(&self, number: u64, title: &str, body: &str) -> Result<Request, String> {
        let (method, path, payload) = match self.kind {
            Kind::GitHub => (
                Method::PATCH,
                format!("/repos/{}/pulls/{number}", self.place.path),
                json!({"title": title, "body": body}),
            ),
            Kind::GitLab => (
                Method::PUT,
                format!("/projects/{}/merge_requests/{number}", self.project()),
                json!({"title": title, "description": body}),
            ),
        };
        let done = self.call(method, &path, &[], Some(payload)).await?;
        self.request_of(&done)
            .ok_or_else(|| format!("the forge's answer names no {}: {done}", self.word()))
    }

    fn request_of(&self, value: &Value) -> Option<Request> {
        let (number, url) = match self.kind {
            Kind::GitHub => (value["number"].as_u64()?, value["html_url"].as_str()?),
            Kind::GitLab => (value["iid"].as_u64()?, value["web_url"].as_str()?),
        };
        Some(Request {
            number,
            url: url.to_owned(),
        })
    }

    /// One call, asked again while the forge limits it (or fails on its side).
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<Value, String> {
        let url = format!("{}{path}", self.api);
        let mut tries = 0;
        loop {
            tries += 1;
            let mut request = self.http.request(method.clone(), &url).query(query);
            request = match self.kind {
                Kind::GitHub => request
                    .bearer_auth(&self.token)
                    .header("accept", "application/vnd.github+json")
                    .header("x-github-api-version", "2022-11-28"),
                Kind::GitLab => request.header("private-token", &self.token),
            };
            if let Some(body) = &body {
                request = request.json(body);
            }
            let answer = request
                .send()
                .await
                .map_err(|e| format!("{method} {url}: {}", braid_shared::error_chain(&e)));
            let answer = match answer {
                Ok(answer) => answer,
                Err(why) if tries < 3 => {
                    tracing::debug!(%why, "forge call failed; asking again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                Err(why) => return Err(why),
            };
            let status = answer.status();
            let wait = limited_for(status, answer.headers());
            let text = answer.text().await.unwrap_or_default();
            if status.is_success() {
                return serde_json::from_str(&text)
                    .map_err(|e| format!("{method} {url}: the forge answered no JSON: {e}"));
            }
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| text.chars().take(200).collect());
            if tries < MOST_TRIES
                && let Some(wait) = wait.or_else(|| {
                    status
                        .is_server_error()
                        .then(|| Duration::from_secs(1 << tries))
                })
            {
                eprintln!(
                    "braid: {} answered {} ({message}); asking again in {}s",
                    self.place.host,
                    status.as_u16(),
                    wait.as_secs_f64().ceil()
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            return Err(format!(
                "{method} {path} on {}: {} {message}",
                self.place.host,
                status.as_u16()
            ));
        }
    }
}

/// How long a refusal asks to be waited out: a 429, or a 403 with `Retry-After` or a
/// spent `x-ratelimit-remaining`; `None` for other answers.
pub fn limited_for(status: StatusCode, headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let retry_after = header("retry-after").and_then(|v| v.parse::<u64>().ok());
    let spent = header("x-ratelimit-remaining") == Some("0");
    let reset = header("x-ratelimit-reset")
        .and_then(|v| v.parse::<i64>().ok())
        .map(|at| (at - chrono::Utc::now().timestamp()).max(1) as u64);
    let limited = status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::FORBIDDEN && (retry_after.is_some() || spent));
    if !limited {
        return None;
    }
    let secs = retry_after.or(reset).unwrap_or(60);
    Some(Duration::from_secs(secs).min(MOST_WAIT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_urls_name_their_host_and_repository() {
        let place = |host: &str, path: &str| {
            Some(Place {
                host: host.into(),
                path: path.into(),
            })
        };
        assert_eq!(
            place_of("https://github.com/acme/svc.git"),
            place("github.com", "acme/svc")
        );
        assert_eq!(
            place_of("git@github.com:acme/svc.git"),
            place("github.com", "acme/svc")
        );
        assert_eq!(
            place_of("ssh://git@gitlab.example.com:2222/group/sub/svc"),
            place("gitlab.example.com", "group/sub/svc")
        );
        assert_eq!(place_of("/srv/git/svc.git"), None);
        assert_eq!(place_of("file:///srv/git/svc.git"), None);
        assert_eq!(kind_of("github.com"), Some(Kind::GitHub));
        assert_eq!(kind_of("gitlab.example.com"), Some(Kind::GitLab));
        assert_eq!(kind_of("git.example.com"), None);
    }

    #[test]
    fn a_spent_limit_is_waited_out_and_a_plain_refusal_is_not() {
        use reqwest::header::{HeaderMap, HeaderValue};
        let mut headers = HeaderMap::new();
        assert_eq!(limited_for(StatusCode::FORBIDDEN, &headers), None);
        assert_eq!(
            limited_for(StatusCode::TOO_MANY_REQUESTS, &headers),
            Some(Duration::from_secs(60))
        );
        headers.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(
            limited_for(StatusCode::FORBIDDEN, &headers),
            Some(Duration::from_secs(7))
        );
        let mut spent = HeaderMap::new();
        spent.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        let reset = (chrono::Utc::now().timestamp() + 30).to_string();
        spent.insert("x-ratelimit-reset", HeaderValue::from_str(&reset).unwrap());
        let wait = limited_for(StatusCode::FORBIDDEN, &spent).unwrap();
        assert!(wait <= Duration::from_secs(30) && wait >= Duration::from_secs(28));
        headers.insert("retry-after", HeaderValue::from_static("99999"));
        assert_eq!(
            limited_for(StatusCode::TOO_MANY_REQUESTS, &headers),
            Some(MOST_WAIT)
        );
    }
}
