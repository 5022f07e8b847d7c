//! The request path, stage by stage (named as in pingora's phases, so a
//! reader finds each rule by its stage):
//!
//! 1. `check_target`: the request may only name a path.
//! 2. `present`: find the credential and check it offline (a JWT's
//!    signature, issuer, audience and dates, [`crate::federated`]);
//!    `authenticate`: look its hash, or the JWT's subject, up.
//! 3. `authorize_token`: expiry, suspension.
//! 4. `route`: pick the upstream (prefix, single, API style).
//! 5. `authorize_endpoint`: inference endpoints, or those `endpoints` opens;
//!    `authorize_budget`: the token's and the upstream's budgets.
//! 6. read the body (size limit); `ask_for_usage`: OpenAI-style streams
//!    asked for their usage (first, so that a refused body costs no quota);
//!    `authorize_request`: allowed models, rate limits.
//! 7. `rewrite`: credentials out, upstream key in, URL from the upstream record.
//! 8. `forward`: the worker's pooled client, with connect and first-byte timeouts;
//!    `check_upstream_head` refuses to relay a rejected key or a 101.
//! 9. `respond`: stream the upstream's answer back frame by frame (with the
//!    usage the proxy asked for hidden again).
//! 10. `account` (usage, spend) and `log`: when the body ends, is cut, or
//!     the client leaves.
//!
//! A request that stops early gets a provider-shaped error ([`Reject`]) and
//! goes straight to `account` and `log`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use strake_crds::provider::ApiStyle;
use strake_crds::token::TokenHash;

use crate::body::{ProxyBody, UpstreamBody, read_limited};
use crate::client::UpstreamClient;
use crate::credential::{self, CredentialError, Kind};
use crate::federated::{self, Refusal, Verified};
use crate::include_usage::{self, Ask, UsageHider};
use crate::index::{Snapshot, TokenPolicy, Upstream, Used};
use crate::logging::AccessLine;
use crate::reject::{BudgetRefusal, Reject};
use crate::route::{self, BodyModel, Candidate};
use crate::server::Shared;
use crate::usage::{BodyKind, Usage, UsageParser};
use crate::{budget, endpoint, glob, limit_headers, me, rewrite, spend, status_usage, target};
use strake_crds::contract::{SourceRef, route_name};

/// Bodies up to this size have their model read for the access log even
/// when the token has no model restrictions.
const MODEL_SNIFF_LIMIT: usize = 1024 * 1024;

/// One request's journey, carried to the end of its response body.
pub struct Exchange {
    shared: Arc<Shared>,
    started: Instant,
    method: Method,
    uri: Uri,
    /// The API style errors are rendered in: the client's, until an
    /// upstream is chosen, then the upstream's.
    style: ApiStyle,
    token: Option<Arc<TokenPolicy>>,
    /// Index into `token.upstreams` of the chosen upstream.
    slot: usize,
    upstream: Option<Arc<Upstream>>,
    model: Option<Box<str>>,
    status: u16,
    ttfb: Option<Duration>,
    parser: UsageParser,
    /// The proxy asked the upstream for usage the client did not ask for.
    asked_for_usage: bool,
    /// Hides that usage from the client, on an event stream.
    hider: Option<Box<UsageHider>>,
    reject: Option<&'static str>,
}

/// hyper's service entry point; `upstream` is the serving worker's client.
pub async fn handle(
    shared: Arc<Shared>,
    upstream: &UpstreamClient,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let style = route::detect_style(parts.uri.path(), &parts.headers, parts.uri.query());
    let mut ex = Exchange {
        shared,
        started,
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        style,
        token: None,
        slot: 0,
        upstream: None,
        model: None,
        status: 0,
        ttfb: None,
        parser: UsageParser::None,
        asked_for_usage: false,
        hider: None,
        reject: None,
    };
    if me::requested(&parts.method, parts.uri.path()) {
        return Ok(match introspect(&mut ex, &parts).await {
            Ok(answer) => ex.answer(answer),
            Err(reject) => ex.reject(reject),
        });
    }
    Ok(match proxy(&mut ex, upstream, parts, body).await {
        Ok(upstream_response) => respond(ex, upstream_response),
        Err(reject) => ex.reject(reject),
    })
}

/// `GET /strake/v1/me` ([`me`]): the presented token's own policy, decided
/// on one snapshot like a request. An expired or suspended token is shown
/// (its holder wants to know why it is refused); an unknown one is not.
async fn introspect(ex: &mut Exchange, parts: &Parts) -> Result<Response<Bytes>, Reject> {
    check_target(&parts.method, &parts.uri, parts.version)?;
    let presented = present(&ex.shared, &parts.headers, parts.uri.query()).await?;
    let (mut body, source) = introspect_snapshot(ex, &presented)?;
    let looked_up = match (ex.shared.status_usage.get(), source) {
        (Some(status), Some(source)) => Some(status.lookup(&source).await),
        _ => None,
    };
    body["usage"] = me::usage(&match &looked_up {
        None => me::UsageSeen::NotCollected,
        Some(Ok(usage)) => me::UsageSeen::Collected(usage.as_ref()),
        Some(Err(status_usage::Unavailable)) => me::UsageSeen::Unavailable,
    });
    let mut response = Response::new(Bytes::from(body.to_string()));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

/// Everything `/me` answers from one snapshot of the index, and the
/// StrakeToken whose status has the token's usage.
fn introspect_snapshot(
    ex: &mut Exchange,
    presented: &Presented,
) -> Result<(serde_json::Value, Option<SourceRef>), Reject> {
    let snapshot = ex.shared.index.load();
    let token = authenticate(&snapshot, presented)?;
    ex.token = Some(token.clone());
    let upstreams: Vec<me::SeenUpstream<'_>> = token
        .upstreams
        .iter()
        .map(|u| {
            let upstream = snapshot.upstream(&u.id);
            me::SeenUpstream {
                route: u.route(),
                provider: upstream.map(|u| u.provider),
                endpoints: upstream.map_or(&[], |u| &u.endpoints),
            }
        })
        .collect();
    let left = token.limits.as_ref().map_or_else(Default::default, |l| {
        token.state.limiter().left(
            l,
            ex.shared.fleet.live_replicas(),
            ex.shared.epoch.elapsed(),
        )
    });
    let budget = token.budget.as_deref().map(|record| {
        let own = budget::Own {
            instance: &ex.shared.instance.id,
            series: token.state.usage.series,
            counters: token.state.usage.counters(),
        };
        budget::view(
            record,
            &own,
            ex.shared.settings.clock.now().as_second(),
            ex.shared.fleet.live_replicas(),
        )
    });
    let body = me::render(
        &token,
        &upstreams,
        &left,
        budget,
        unix_now().as_millis() as i64,
    );
    Ok((body, token.source.clone()))
}

/// Stages 1–8: everything up to the upstream's response head.
async fn proxy(
    ex: &mut Exchange,
    client: &UpstreamClient,
    parts: Parts,
    body: Incoming,
) -> Result<Response<Incoming>, Reject> {
    let Parts {
        method,
        uri,
        version,
        headers,
        ..
    } = parts;
    check_target(&method, &uri, version)?;
    let presented = present(&ex.shared, &headers, uri.query()).await?;
    let (token, upstream, path) = {
        // One snapshot for the whole decision; released before any await.
        let snapshot = ex.shared.index.load();
        let token = authenticate(&snapshot, &presented)?;
        ex.token = Some(token.clone());
        authorize_token(&token)?;
        let (slot, upstream, path) = route(&snapshot, &token, uri.path(), ex.style)?;
        ex.slot = slot;
        ex.style = upstream.provider.style();
        ex.upstream = Some(upstream.clone());
        authorize_endpoint(&method, path, &upstream, &token)?;
        authorize_budget(&ex.shared, &token, &upstream)?;
        (token, upstream, path)
    };
    let settings = &ex.shared.settings;
    let body = read_limited(
        body,
        &headers,
        settings.max_body_bytes,
        settings.body_timeout,
    )
    .await?;
    let body = ask_for_usage(ex, &upstream, &method, path, uri.query(), body)?;
    ex.model = authorize_request(ex, &token, &upstream, path, &headers, &body)?;
    let request = rewrite(method, headers, &upstream, path, uri.query(), body)?;
    let response = forward(&ex.shared, client, request).await?;
    ex.ttfb = Some(ex.started.elapsed());
    check_upstream_head(&ex.shared, &upstream, &response)?;
    Ok(response)
}

fn check_target(method: &Method, uri: &Uri, version: Version) -> Result<(), Reject> {
    target::check(method, uri, version).map_err(Reject::UnsafeTarget)
}

/// A credential checked offline, before it meets a snapshot.
enum Presented {
    /// A minted token's hash.
    Minted(TokenHash),
    /// An OIDC token whose signature, issuer, audience and dates hold.
    Federated(Arc<Verified>),
}

async fn present(
    shared: &Shared,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Presented, Reject> {
    let (credential, _source, kind) = credential::find(headers, query).map_err(|e| match e {
        CredentialError::Missing => Reject::MissingCredential,
        CredentialError::Malformed(e) => Reject::MalformedToken(e),
    })?;
    match kind {
        Kind::Minted => Ok(Presented::Minted(TokenHash::of(credential))),
        Kind::Jwt => verify_jwt(shared, credential)
            .await
            .map(Presented::Federated)
            .map_err(Reject::Federated),
    }
}

/// A JWT verified now, or remembered from an earlier request until its
/// `exp` ([`federated::VerifiedCache`]).
async fn verify_jwt(shared: &Shared, jwt: &str) -> Result<Arc<Verified>, Refusal> {
    let now = unix_now().as_secs() as i64;
    let hash = TokenHash::of(jwt);
    if let Some(verified) = shared.verified.get(&hash, now) {
        return Ok(verified);
    }
    let seen = federated::peek(jwt)?;
    // Only issuers a StrakeToken names are asked for keys: a token cannot
    // make the proxy fetch from a URL of its choosing.
    if !shared.index.load().federated().knows_issuer(&seen.issuer) {
        return Err(Refusal::UnknownIssuer(federated::quoted(&seen.issuer)));
    }
    let keys = shared
        .issuers
        .keys(&seen.issuer, seen.kid.as_deref(), &shared.metrics)
        .await?;
    let verified = Arc::new(federated::verify(jwt, &seen, &keys, now)?);
    let max_age = shared.issuers.settings().verified_max_age.as_secs() as i64;
    shared.verified.insert(hash, verified.clone(), now, max_age);
    Ok(verified)
}

fn authenticate(snapshot: &Snapshot, presented: &Presented) -> Result<Arc<TokenPolicy>, Reject> {
    match presented {
        Presented::Minted(hash) => snapshot
            .authenticate(hash, unix_now().as_millis() as i64)
            .cloned()
            .ok_or(Reject::UnknownToken),
        Presented::Federated(verified) => snapshot
            .authenticate_federated(verified)
            .cloned()
            .map_err(Reject::Federated),
    }
}

fn authorize_token(token: &TokenPolicy) -> Result<(), Reject> {
    if token.is_expired(unix_now().as_millis() as i64) {
        return Err(Reject::Expired {
            at: token.expires_at_string(),
        });
    }
    if token.suspended {
        return Err(Reject::Suspended);
    }
    Ok(())
}

fn route<'p>(
    snapshot: &Snapshot,
    token: &TokenPolicy,
    path: &'p str,
    style: ApiStyle,
) -> Result<(usize, Arc<Upstream>, &'p str), Reject> {
    const MAX: usize = crate::index::MAX_TOKEN_UPSTREAMS;
    let mut resolved: [Option<&Arc<Upstream>>; MAX] = [None; MAX];
    let mut candidates: [Candidate<'_>; MAX] = [Candidate {
        route: "",
        provider: None,
    }; MAX];
    // The index refuses tokens with more.
    let n = token.upstreams.len().min(MAX);
    for (i, u) in token.upstreams.iter().take(n).enumerate() {
        resolved[i] = snapshot.upstream(&u.id);
        candidates[i] = Candidate {
            route: u.route(),
            provider: resolved[i].map(|u| u.provider),
        };
    }
    let routed = route::route(path, style, &candidates[..n]).map_err(Reject::Route)?;
    let upstream = resolved[routed.index].expect("route() only picks configured upstreams");
    Ok((routed.index, upstream.clone(), routed.path))
}

/// The endpoint policy ([`endpoint`]): before the body is read, so a
/// refused endpoint costs neither the upload nor quota.
fn authorize_endpoint(
    method: &Method,
    path: &str,
    upstream: &Upstream,
    token: &TokenPolicy,
) -> Result<(), Reject> {
    endpoint::authorize(
        upstream.provider.style(),
        method,
        path,
        &upstream.endpoints,
        &token.endpoints,
    )
    .map_err(|refusal| Reject::EndpointNotAllowed {
        method: method.as_str().to_owned(),
        path: path.to_owned(),
        admin: refusal == endpoint::Refusal::Admin,
    })
}

/// Budgets ([`budget`]): the token's, then its upstream's; before the body
/// is read, so a spent budget costs no upload.
fn authorize_budget(
    shared: &Shared,
    token: &TokenPolicy,
    upstream: &Upstream,
) -> Result<(), Reject> {
    let checks = [
        (token.budget.as_deref(), &token.state.usage, None),
        (
            upstream.budget.as_deref(),
            &*upstream.usage,
            Some(route_name(&upstream.id)),
        ),
    ];
    for (record, cell, route) in checks {
        let Some(record) = record else { continue };
        let now = shared.settings.clock.now().as_second();
        let own = budget::Own {
            instance: &shared.instance.id,
            series: cell.series,
            counters: cell.counters(),
        };
        let refusal = |retry_after_secs| BudgetRefusal {
            upstream: route.map(str::to_string),
            budget: budget::describe(record),
            resets_at: budget::resets_at(record),
            retry_after_secs,
        };
        match budget::decide(record, &own, now, shared.fleet.live_replicas()) {
            budget::Verdict::Open => {}
            budget::Verdict::Spent => {
                let until_reset = u64::try_from(record.resets_at - now).unwrap_or(0).max(1);
                return Err(Reject::BudgetSpent(refusal(until_reset)));
            }
            budget::Verdict::HeldBack(secs) => return Err(Reject::BudgetHeldBack(refusal(secs))),
        }
    }
    Ok(())
}

/// Allowed models, then rate limits (so a refused model costs no quota).
/// Returns the model, for the log.
fn authorize_request(
    ex: &Exchange,
    token: &TokenPolicy,
    upstream: &Upstream,
    path: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Option<Box<str>>, Reject> {
    let restricted = !token.allowed_models.is_empty();
    let in_path = route::path_model(upstream.provider.style(), path);
    let content_type = || {
        headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.as_bytes())
    };
    if restricted && route::has_empty_segment(path) {
        return Err(Reject::ModelUnreadable);
    }
    let in_body = if restricted {
        // A decision: the strict parse, which refuses what the upstream
        // might read differently (duplicate keys, broken JSON, encodings).
        let encoding = headers
            .get(http::header::CONTENT_ENCODING)
            .map(|v| v.as_bytes());
        route::body_model(content_type(), encoding, body)
    } else if in_path.is_none() && body.len() <= MODEL_SNIFF_LIMIT {
        // Only for the log: the quick, lenient read.
        route::logged_body_model(content_type(), body)
    } else {
        BodyModel::Absent
    };
    if restricted {
        let refuse = |model: &str| Reject::ModelNotAllowed {
            model: model.to_owned(),
            allowed: token.allowed_models.iter().map(|m| m.to_string()).collect(),
        };
        if let Some(m) = &in_path
            && !glob::allowed(&token.allowed_models, m)
        {
            return Err(refuse(m));
        }
        match &in_body {
            BodyModel::Named(m) if !glob::allowed(&token.allowed_models, m) => {
                return Err(refuse(m));
            }
            BodyModel::Unreadable => return Err(Reject::ModelUnreadable),
            _ => {}
        }
    }
    if let Some(limits) = &token.limits {
        let now = ex.shared.epoch.elapsed();
        token
            .state
            .limiter()
            .admit(limits, ex.shared.fleet.live_replicas(), now)
            .map_err(Reject::RateLimited)?;
    }
    Ok(match (in_path, in_body) {
        (Some(m), _) => Some(m.into()),
        (None, BodyModel::Named(m)) => Some(m.into()),
        _ => None,
    })
}

/// The body to forward: an OpenAI-style stream that does not ask for its
/// usage is made to (see [`include_usage`]), so that it can be counted.
fn ask_for_usage(
    ex: &mut Exchange,
    upstream: &Upstream,
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: Bytes,
) -> Result<Bytes, Reject> {
    if !include_usage::applies(upstream.provider, method, path, query) {
        return Ok(body);
    }
    match include_usage::ask(&body) {
        Ok(Ask::AsIs) => Ok(body),
        Ok(Ask::Added(asked)) => {
            ex.asked_for_usage = true;
            Ok(Bytes::from(asked))
        }
        Err(include_usage::Unreadable) => Err(Reject::BodyUnreadable),
    }
}

/// Builds the upstream request: scheme and authority from the upstream
/// record only, its base path + the routed path + the query without `key`.
fn rewrite(
    method: Method,
    mut headers: HeaderMap,
    upstream: &Upstream,
    path: &str,
    query: Option<&str>,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, Reject> {
    let query = query.and_then(credential::strip_query_key);
    let mut pq = String::with_capacity(
        upstream.base_path.len() + path.len() + query.as_ref().map_or(0, |q| q.len() + 1),
    );
    pq.push_str(&upstream.base_path);
    pq.push_str(path);
    if let Some(q) = &query {
        pq.push('?');
        pq.push_str(q);
    }
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(upstream.scheme.clone());
    uri.authority = Some(upstream.authority.clone());
    uri.path_and_query = Some(
        PathAndQuery::try_from(pq)
            .map_err(|_| Reject::UnsafeTarget(target::UnsafeTarget::NotOriginForm))?,
    );
    let uri = Uri::from_parts(uri)
        .map_err(|_| Reject::UnsafeTarget(target::UnsafeTarget::NotOriginForm))?;
    rewrite::request_headers(&mut headers, upstream);
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Ok(request)
}

async fn forward(
    shared: &Shared,
    client: &UpstreamClient,
    request: Request<Full<Bytes>>,
) -> Result<Response<Incoming>, Reject> {
    let timeout = shared.settings.upstream_timeout;
    match tokio::time::timeout(timeout, client.request(request)).await {
        Ok(Ok(response)) => Ok(response),
        Err(_) => Err(Reject::UpstreamTimeout {
            secs: timeout.as_secs(),
        }),
        Ok(Err(e)) => {
            let chain = error_chain(&e);
            tracing::warn!(error = %chain, "upstream request failed");
            if e.is_connect() {
                if chain.contains("timed out") || chain.contains("timeout") {
                    Err(Reject::UpstreamTimeout {
                        secs: shared.settings.connect_timeout.as_secs(),
                    })
                } else {
                    Err(Reject::UpstreamConnect)
                }
            } else {
                Err(Reject::UpstreamFailed)
            }
        }
    }
}

/// What is never relayed: a 401 or 403 (the upstream refused the
/// platform's key; the client's own credential never reaches it, and some
/// providers quote part of the key in the body), and a 101 to a request
/// that asked for no upgrade.
fn check_upstream_head(
    shared: &Shared,
    upstream: &Upstream,
    response: &Response<Incoming>,
) -> Result<(), Reject> {
    let status = response.status().as_u16();
    match status {
        401 | 403 => {
            tracing::warn!(upstream = %upstream.id, status, "the upstream rejected its key");
            shared.metrics.upstream_key_rejected(&upstream.id, status);
            Err(Reject::UpstreamKeyRejected { status })
        }
        101 => Err(Reject::UpstreamSwitchedProtocols),
        _ => Ok(()),
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// Stage 9: the upstream's head now, its body as it arrives.
fn respond(mut ex: Exchange, response: Response<Incoming>) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    ex.status = parts.status.as_u16();
    rewrite::response_headers(&mut parts.headers);
    if let Some(token) = &ex.token
        && let Some(limits) = &token.limits
    {
        let left = token.state.limiter().left(
            limits,
            ex.shared.fleet.live_replicas(),
            ex.shared.epoch.elapsed(),
        );
        let now_ms = unix_now().as_millis() as i64;
        limit_headers::apply(ex.style, &left, now_ms, &mut parts.headers);
    }
    parts.version = Version::default();
    let encoded = parts
        .headers
        .get(http::header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes() != b"identity");
    let kind = if encoded {
        BodyKind::Other
    } else {
        BodyKind::from_content_type(
            parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .map(|v| v.as_bytes()),
        )
    };
    ex.parser = UsageParser::new(kind);
    if ex.asked_for_usage && kind == BodyKind::EventStream {
        ex.hider = Some(Box::new(UsageHider::new()));
        // The client gets fewer bytes than the upstream sent.
        parts.headers.remove(http::header::CONTENT_LENGTH);
    }
    Response::from_parts(
        parts,
        ProxyBody::Upstream(UpstreamBody::new(body, Box::new(ex))),
    )
}

impl Exchange {
    /// A chunk of the response body went by.
    pub(crate) fn observe(&mut self, data: &Bytes) {
        self.parser.feed(data);
    }

    /// Whether the client gets other bytes than the upstream sent
    /// ([`Exchange::hide`]).
    pub(crate) fn hides_usage(&self) -> bool {
        self.hider.is_some()
    }

    /// What the client gets of an observed chunk: without the usage the
    /// proxy asked for.
    pub(crate) fn hide(&mut self, data: &Bytes) -> Bytes {
        match &mut self.hider {
            Some(h) => h.pass(data),
            None => data.clone(),
        }
    }

    /// At the end of the upstream's body: what [`Exchange::hide`] held back.
    pub(crate) fn hidden_rest(&mut self) -> Option<Bytes> {
        self.hider.as_mut().and_then(|h| h.flush())
    }

    /// Whether [`Exchange::hide`] holds bytes back.
    pub(crate) fn holds_bytes(&self) -> bool {
        self.hider.as_ref().is_some_and(|h| h.holds())
    }

    /// Whether the client has had the whole answer although the upstream's
    /// body has not ended: the stream's final event went by and nothing is
    /// held back. Clients such as Codex hang up right after it.
    pub(crate) fn answered_in_full(&self) -> bool {
        self.parser.stream_ended() && !self.holds_bytes()
    }

    /// Stage 10, for a forwarded request: the body ended (`complete`) or was
    /// cut off.
    pub(crate) fn finish(mut self, complete: bool) {
        let usage = self.parser.finish();
        self.account(usage, true);
        self.log(usage, complete);
    }

    /// A request the proxy answers itself, successfully (`/strake/v1/me`).
    fn answer(mut self, answer: Response<Bytes>) -> Response<ProxyBody> {
        self.status = answer.status().as_u16();
        self.log(Usage::default(), true);
        answer.map(ProxyBody::full)
    }

    /// A request the proxy answers itself.
    fn reject(mut self, reject: Reject) -> Response<ProxyBody> {
        self.status = reject.status().as_u16();
        self.reject = Some(reject.reason());
        if reject.is_auth_failure() {
            self.shared.metrics.auth_failure(reject.reason());
        }
        let response = reject.response(self.style).map(ProxyBody::full);
        self.account(Usage::default(), false);
        self.log(Usage::default(), true);
        response
    }

    fn account(&mut self, usage: Usage, forwarded: bool) {
        let (Some(token), Some(upstream)) = (&self.token, &self.upstream) else {
            return;
        };
        let metrics = &self.shared.metrics;
        let handles = token.upstreams[self.slot].metrics(metrics, token);
        handles.request(self.status);
        if let Some(n) = usage.input_tokens {
            handles.input_tokens.inc_by(n);
        }
        if let Some(n) = usage.output_tokens {
            handles.output_tokens.inc_by(n);
        }
        let counts = spend::counts(&usage);
        if counts.cached_input > 0 {
            handles.cached_input_tokens.inc_by(counts.cached_input);
        }
        if counts.cache_write > 0 {
            handles.cache_write_tokens.inc_by(counts.cache_write);
        }
        let upstream_metrics = upstream.metrics(metrics);
        upstream_metrics
            .duration
            .observe(self.started.elapsed().as_secs_f64());
        if let Some(ttfb) = self.ttfb {
            upstream_metrics.ttfb.observe(ttfb.as_secs_f64());
        }
        let outcome = (forwarded && self.shared.settings.pricing).then(|| {
            spend::record(
                &self.shared.prices,
                metrics,
                token,
                upstream,
                self.model.as_deref(),
                &counts,
                self.status,
            )
        });
        if forwarded {
            let used = Used {
                input: counts.input,
                output: counts.output,
                cached_input: counts.cached_input,
                cache_write: counts.cache_write,
                spend: spend::picodollars(outcome, &counts),
            };
            let now = unix_now().as_secs();
            token.state.usage.record(&used, now);
            upstream.usage.record(&used, now);
            if let Some(limits) = &token.limits
                && usage.total() > 0
            {
                let now = self.shared.epoch.elapsed();
                token.state.limiter().debit_tokens(
                    limits,
                    self.shared.fleet.live_replicas(),
                    usage.total(),
                    now,
                );
            }
        }
    }

    /// One access line per request (see [`AccessLine`]).
    fn log(&self, usage: Usage, complete: bool) {
        let ms = |d: Duration| d.as_micros() as f64 / 1000.0;
        AccessLine {
            method: self.method.as_str(),
            path: self.uri.path(),
            token: self.token.as_ref().map(|t| &*t.name),
            identity: self.token.as_ref().map(|t| &*t.identity),
            upstream: self.upstream.as_ref().map(|u| &*u.id),
            model: self.model.as_deref(),
            status: self.status,
            latency_ms: ms(self.started.elapsed()),
            ttfb_ms: self.ttfb.map(ms),
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cached_input_tokens: usage.cached_input_tokens,
            cache_write_tokens: usage.cache_write_tokens,
            complete,
            reject: self.reject,
        }
        .emit();
    }
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}
