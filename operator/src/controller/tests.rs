//! Controller behaviour against an in-memory API (see [`super::fake_api`]):
//! one test per lifecycle case.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, store::Writer};
use kube::runtime::watcher;
use strake_crds::contract::{self, TokenRecord, UpstreamRecord};
use strake_crds::resources::SecretKeyRef;
use strake_crds::token::{self as tok, Token};
use strake_crds::{Phase, Provider, StrakeToken, StrakeTokenSpec, UpstreamKey, UpstreamKeySpec};

use super::fake_api::FakeApi;
use super::{Context, orphans, strake_token, upstream_key};
use crate::cli::{Scope, Settings};
use crate::core::objects::{self, FINALIZER, TOKEN_KEY};
use crate::core::upstream_hosts::AllowedHosts;
use crate::core::{condition, upstream};
use crate::metrics::Metrics;

const NS: &str = "team-a";
const PROXY_NS: &str = "strake-system";
const ENDPOINT: &str = "https://llm.example.com";
const REAL_KEY: &str = "sk-proj-THE-REAL-UPSTREAM-KEY";
const RESYNC: Duration = Duration::from_secs(300);

fn token_path(name: &str) -> String {
    format!("/apis/strake.sh/v1alpha1/namespaces/{NS}/straketokens/{name}")
}
fn upstream_path(name: &str) -> String {
    format!("/apis/strake.sh/v1alpha1/namespaces/{NS}/upstreamkeys/{name}")
}
fn secret_path(ns: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{ns}/secrets/{name}")
}
fn proxy_token_path(name: &str) -> String {
    secret_path(PROXY_NS, &contract::token_secret_name(NS, name))
}
fn proxy_upstream_path(name: &str) -> String {
    secret_path(PROXY_NS, &contract::upstream_secret_name(NS, name))
}

struct Harness {
    fake: Arc<FakeApi>,
    ctx: Arc<Context>,
    token_writer: Writer<StrakeToken>,
    /// Feeds the token controller's UpstreamKey cache from the fake.
    token_upstreams: std::sync::Mutex<Writer<UpstreamKey>>,
    _recount: mpsc::UnboundedReceiver<ObjectRef<UpstreamKey>>,
}

fn harness() -> Harness {
    harness_with(Default::default())
}

fn harness_with(usage: crate::cli::UsageSettings) -> Harness {
    let fake = FakeApi::new();
    let client = fake.client();
    let settings = Arc::new(Settings {
        proxy_namespace: PROXY_NS.into(),
        endpoint: ENDPOINT.into(),
        scopes: vec![Scope::All],
        resync: RESYNC,
        expiry_warning: std::time::Duration::from_secs(7 * 86_400),
        cluster_issuer: strake_crds::federated::DEFAULT_CLUSTER_ISSUER.into(),
        clock: strake_crds::clock::Clock::system(),
        allowed_upstream_hosts: AllowedHosts::defaults(),
        prices: strake_crds::pricing::PriceTable::builtin(),
        usage,
        token_concurrency: crate::cli::DEFAULT_TOKEN_CONCURRENCY,
        revocation_concurrency: crate::cli::DEFAULT_REVOCATION_CONCURRENCY,
    });
    let (tokens, mut token_writer) = reflector::store::<StrakeToken>();
    let (upstreams, mut upstream_writer) = reflector::store::<UpstreamKey>();
    token_writer.apply_watcher_event(&watcher::Event::Init);
    token_writer.apply_watcher_event(&watcher::Event::InitDone);
    upstream_writer.apply_watcher_event(&watcher::Event::Init);
    upstream_writer.apply_watcher_event(&watcher::Event::InitDone);
    let (token_upstreams, token_upstream_writer) = reflector::store::<UpstreamKey>();
    let (tx, rx) = mpsc::unbounded();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "strake-operator".into(),
            instance: None,
        },
    );
    let ctx = Arc::new(
        Context::new(
            client,
            settings,
            recorder,
            Arc::new(Metrics::new()),
            tokens,
            upstreams,
            tx,
        )
        .with_token_upstreams(token_upstreams),
    );
    let h = Harness {
        fake,
        ctx,
        token_writer,
        token_upstreams: std::sync::Mutex::new(token_upstream_writer),
        _recount: rx,
    };
    h.sync_token_upstreams();
    h
}

fn token_spec(upstreams: &[&str]) -> StrakeTokenSpec {
    crate::core::fixtures::token_spec(upstreams)
}

impl Harness {
    /// Stores a StrakeToken as `kubectl apply` plus the finalizer would leave it.
    fn create_token(&self, name: &str, spec: StrakeTokenSpec) {
        let mut t = StrakeToken::new(name, spec);
        t.metadata.namespace = Some(NS.into());
        t.metadata.generation = Some(1);
        t.metadata.uid = Some(format!("uid-{name}"));
        t.metadata.finalizers = Some(vec![FINALIZER.into()]);
        self.fake.put(&token_path(name), &t);
    }

    fn token(&self, name: &str) -> StrakeToken {
        self.fake.get(&token_path(name)).expect("token exists")
    }

    /// Edits the spec the way the API server would: a new generation.
    fn edit_token(&self, name: &str, edit: impl FnOnce(&mut StrakeTokenSpec)) {
        let mut t = self.token(name);
        edit(&mut t.spec);
        t.metadata.generation = Some(t.metadata.generation.unwrap_or(1) + 1);
        self.fake.put(&token_path(name), &t);
    }

    /// The token controller's UpstreamKey cache relists what the fake holds,
    /// as its watch would have shown it by now.
    fn sync_token_upstreams(&self) {
        let mut writer = self.token_upstreams.lock().unwrap();
        writer.apply_watcher_event(&watcher::Event::Init);
        for uk in self.fake.all::<UpstreamKey>(&format!(
            "/apis/strake.sh/v1alpha1/namespaces/{NS}/upstreamkeys"
        )) {
            writer.apply_watcher_event(&watcher::Event::InitApply(uk));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
    }

    async fn reconcile_token(&self, name: &str) -> Action {
        self.sync_token_upstreams();
        strake_token::reconcile(Arc::new(self.token(name)), self.ctx.clone())
            .await
            .expect("reconcile succeeds")
    }

    /// An UpstreamKey whose status says it is published.
    fn create_ready_upstream(&self, name: &str, provider: Provider) {
        let mut uk = upstream_key_obj(name, provider);
        uk.status = Some(strake_crds::UpstreamKeyStatus {
            conditions: vec![condition::ready(
                true,
                upstream::reason::PUBLISHED,
                String::new(),
                Some(1),
                &[],
                Timestamp::now(),
            )],
            observed_generation: Some(1),
            tokens: None,
            ..Default::default()
        });
        self.fake.put(&upstream_path(name), &uk);
    }

    fn plaintext(&self, name: &str) -> Secret {
        self.fake
            .get(&secret_path(NS, &format!("{name}-strake")))
            .expect("plaintext Secret exists")
    }

    fn held_token(&self, name: &str) -> Token {
        let s = self.plaintext(name);
        let raw = &s.data.unwrap()[TOKEN_KEY].0;
        Token::parse(std::str::from_utf8(raw).unwrap()).unwrap()
    }

    fn record(&self, name: &str) -> Option<TokenRecord> {
        self.fake
            .get::<Secret>(&proxy_token_path(name))
            .and_then(|s| objects::read_record(&s))
    }

    /// The token appears in no request but the one writing the holder's Secret.
    fn assert_token_confined(&self, token: &Token) {
        let encoded =
            serde_json::to_string(&ByteString(token.expose().as_bytes().to_vec())).unwrap();
        let encoded = encoded.trim_matches('"');
        for r in self.fake.requests() {
            if r.path.ends_with("-strake") && r.method == http::Method::PATCH {
                continue;
            }
            assert!(
                !r.body.contains(token.expose()) && !r.body.contains(encoded),
                "token leaked in {} {}",
                r.method,
                r.path
            );
        }
    }
}

fn upstream_key_obj(name: &str, provider: Provider) -> UpstreamKey {
    let mut uk = UpstreamKey::new(
        name,
        UpstreamKeySpec {
            provider,
            base_url: None,
            secret_ref: SecretKeyRef {
                name: format!("{name}-upstream"),
                key: "api-key".into(),
            },
            headers: BTreeMap::new(),
            endpoints: vec![],
            budget: None,
        },
    );
    uk.metadata.namespace = Some(NS.into());
    uk.metadata.generation = Some(1);
    uk.metadata.uid = Some(format!("uid-{name}"));
    uk.metadata.finalizers = Some(vec![FINALIZER.into()]);
    uk
}

fn phase(t: &StrakeToken) -> (Option<Phase>, String) {
    let s = t.status.as_ref().expect("status written");
    let reason = condition::ready_reason(&s.conditions)
        .unwrap_or_default()
        .to_string();
    (s.phase, reason)
}

fn event_reasons(fake: &FakeApi) -> Vec<String> {
    fake.events().into_iter().map(|(r, _)| r).collect()
}

#[tokio::test]
async fn issue_first_reconcile_writes_plaintext_record_and_status() {
    let h = harness();
    h.create_ready_upstream("openai", Provider::OpenAi);
    h.create_ready_upstream("anthropic", Provider::Anthropic);
    h.create_token("alice", token_spec(&["openai", "anthropic"]));

    let action = h.reconcile_token("alice").await;
    assert_eq!(action, Action::requeue(RESYNC));
    assert_eq!(
        h.fake.calls(),
        // The UpstreamKeys come from the cache: the API is asked only
        // for the Secrets.
        [
            format!("GET {}", secret_path(NS, "alice-strake")),
            format!("GET {}", proxy_token_path("alice")),
            format!("PATCH {}", secret_path(NS, "alice-strake")),
            format!("PATCH {}", proxy_token_path("alice")),
            format!("PATCH {}/status", token_path("alice")),
            format!("POST /apis/events.k8s.io/v1/namespaces/{NS}/events"),
        ]
    );

    // The holder's Secret: the token and ready-to-use env keys, owned by the token.
    let token = h.held_token("alice");
    let plaintext = h.plaintext("alice");
    let data = plaintext.data.as_ref().unwrap();
    let env = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
    assert_eq!(env("OPENAI_BASE_URL"), "https://llm.example.com/v1");
    assert_eq!(env("OPENAI_API_KEY"), token.expose());
    assert_eq!(env("ANTHROPIC_BASE_URL"), "https://llm.example.com");
    assert_eq!(env("ANTHROPIC_AUTH_TOKEN"), token.expose());
    assert_eq!(env("STRAKE_BASE_URL"), ENDPOINT);
    assert!(objects::controlled_by(&plaintext.metadata, "uid-alice"));
    assert_eq!(
        plaintext.metadata.annotations.as_ref().unwrap()[objects::ROTATION_ANNOTATION],
        "0"
    );

    // The proxy's Secret: the hash and policy only.
    let published: Secret = h.fake.get(&proxy_token_path("alice")).unwrap();
    assert_eq!(
        published.type_.as_deref(),
        Some(contract::TOKEN_SECRET_TYPE)
    );
    assert_eq!(
        published.metadata.labels.as_ref().unwrap()[contract::ROLE_LABEL],
        "token"
    );
    let record = h.record("alice").unwrap();
    assert_eq!(record.sha256, token.hash());
    assert_eq!(record.name, "team-a/alice");
    assert_eq!(record.upstreams, ["team-a/openai", "team-a/anthropic"]);
    assert!(!record.suspended);

    // Status.
    let t = h.token("alice");
    assert_eq!(phase(&t), (Some(Phase::Active), "Active".into()));
    let status = t.status.unwrap();
    assert_eq!(status.token_prefix.as_deref(), Some(token.display_prefix()));
    assert_eq!(
        status.endpoint.as_deref(),
        Some("https://llm.example.com/v1")
    );
    assert_eq!(status.secret_name.as_deref(), Some("alice-strake"));
    assert_eq!(status.observed_generation, Some(1));
    assert!(status.issued_at.is_some());
    assert_eq!(status.conditions[0].status, "True");

    assert_eq!(event_reasons(&h.fake), ["Issued"]);
    h.assert_token_confined(&token);
}

#[tokio::test]
async fn steady_state_keeps_the_token_and_writes_nothing() {
    let h = harness();
    h.create_ready_upstream("openai", Provider::OpenAi);
    h.create_token("alice", token_spec(&["openai"]));
    h.reconcile_token("alice").await;
    let token = h.held_token("alice");
    h.fake.clear_requests();

    h.reconcile_token("alice").await;
    assert!(
        h.fake.calls().iter().all(|c| c.starts_with("GET ")),
        "a resync wrote something: {:?}",
        h.fake.calls()
    );
    assert_eq!(h.held_token("alice"), token);
}

#[tokio::test]
async fn rotate_mints_a_new_token_and_replaces_the_hash() {
    let h = harness();
    h.create_ready_upstream("openai", Provider::OpenAi);
    h.create_token("alice", token_spec(&["openai"]));
    h.reconcile_token("alice").await;
    let old = h.held_token("alice");
    h.fake.clear_requests();

    h.edit_token("alice", |s| s.rotation = 1);
    h.reconcile_token("alice").await;
    let new = h.held_token("alice");
    assert_ne!(new, old);
    assert_eq!(h.record("alice").unwrap().sha256, new.hash());
    assert_eq!(
        h.plaintext("alice").metadata.annotations.unwrap()[objects::ROTATION_ANNOTATION],
        "1"
    );
    assert_eq!(
        h.token("alice").status.unwrap().token_prefix.as_deref(),
        Some(new.display_prefix())
    );
    assert_eq!(event_reasons(&h.fake), ["Rotated"]);
    h.assert_token_confined(&new);
    h.assert_token_confined(&old);
}

#[tokio::test]
async fn suspend_and_resume_republish_the_same_token() {
    let h = harness();
    h.create_ready_upstream("openai", Provider::OpenAi);
    h.create_token("alice", token_spec(&["openai"]));
    h.reconcile_token("alice").await;
    let token = h.held_token("alice");
    h.fake.clear_requests();

    h.edit_token("alice", |s| s.suspended = true);
    h.reconcile_token("alice").await;
    assert!(h.record("alice").unwrap().suspended);
    assert_eq!(
        phase(&h.token("alice")),
        (Some(Phase::Suspended), "Suspended".into())
    );
    assert_eq!(
        h.token("alice").status.unwrap().conditions[0].status,
        "False"
    );

    h.edit_token("alice", |s| s.suspended = false);
    h.reconcile_token("alice").await;
    assert!(!h.record("alice").unwrap().suspended);
    assert_eq!(
        phase(&h.token("alice")),
        (Some(Phase::Active), "Active".into())
    );
    assert_eq!(event_reasons(&h.fake), ["Suspended", "Resumed"]);
    assert_eq!(h.held_token("alice"), token);
    assert_eq!(h.record("alice").unwrap().sha256, token.hash());
}

#[tokio::test]
async fn expire_withdraws_the_record_and_requeues_at_the_instant() {
    let h = harness();
    h.create_ready_upstream("openai", Provider::OpenAi);
    let mut spec = token_spec(&["openai"]);
    spec.expires_at = Some(Time(Timestamp::now() + SignedDuration::from_secs(60)));
    h.create_token("alice", spec);

    // Not yet expired: published, and woken at the expiry, not at the resync.
    let action = h.reconcile_token("alice").await;
    assert!(h.record("alice").is_some());
    assert_ne!(action, Action::requeue(RESYNC));
    let prefix = h.token("alice").status.unwrap().token_prefix;

    h.edit_token("alice", |s| {
        s.expires_at = Some(Time(Timestamp::now() - SignedDuration::from_secs(1)));
    });
    h.fake.clear_requests();
    h.reconcile_token("alice").await;
    assert!(
        !h.fake.exists(&proxy_token_path("alice")),
        "record withdrawn"
    );
    assert!(
        h.fake
            .calls()
            .contains(&format!("DELETE {}", proxy_token_path("alice")))
    );
    let t = h.token("alice");
    assert_eq!(phase(&t), (Some(Phase::Expired), "Expired".into()));
    // The holder's Secret is untouched (read, never written), and the
    // status still recognises the token.
    assert!(
        h.fake
            .calls()
            .iter()
            .all(|c| !c.contains("alice-strake") || c.starts_with("GET "))
    );
    assert_eq!(t.status.unwrap().token_prefix, prefix);
    assert_eq!(event_reasons(&h.fake), ["Expired"]);

    // Idempotent: a second pass deletes nothing that is not there and stays quiet.
    h.fake.clear_requests();
    h.reconcile_token("alice").await;
    assert!(h.fake.events().is_empty());
}

#[tokio::test]
async fn missing_upstream_is_pending_then_recovers() {
    let h = harness();
    h.create_token("alice", token_spec(&["openai"]));

    h.reconcile_token("alice").await;
    let t = h.token("alice");
    assert_eq!(phase(&t), (Some(Phase::Pending), "UpstreamNotFound".into()));
    assert!(t.status.unwrap().conditions[0].message.contains("openai"));
    // Published anyway (see core::token::decide): the proxy serves no upstream
    // it has no Secret for, and the policy stays current.
    let token = h.held_token("alice");
    assert_eq!(h.record("alice").unwrap().sha256, token.hash());
    assert!(
        !h.plaintext("alice")
            .data
            .unwrap()
            .contains_key("OPENAI_BASE_URL")
    );
    assert_eq!(event_reasons(&h.fake), ["Issued", "UpstreamNotFound"]);

    // It appears, but is not Ready yet.
    h.fake.put(
        &upstream_path("openai"),
        &upstream_key_obj("openai", Provider::OpenAi),
    );
    h.reconcile_token("alice").await;
    assert_eq!(
        phase(&h.token("alice")),
        (Some(Phase::Pending), "UpstreamNotReady".into())
    );

    // Ready: Active, same token, env keys filled in.
    h.create_ready_upstream("openai", Provider::OpenAi);
    h.reconcile_token("alice").await;
    assert_eq!(
        phase(&h.token("alice")),
        (Some(Phase::Active), "Active".into())
    );
    assert_eq!(h.held_token("alice"), token);
    assert!(
        h.plaintext("alice")
            .data
            .unwrap()
            .contains_key("OPENAI_BASE_URL")
    );
}

#[tokio::test]
async fn drift_a_deleted_proxy_secret_is_restored_with_the_same_hash() {
    let h = harness();
    h.create_ready_upstream("openai", Provider::OpenAi);
    h.create_token("alice", token_spec(&["openai"]));
    h.reconcile_token("alice").await;
    let token = h.held_token("alice");

    h.fake.remove(&proxy_token_path("alice"));
    h.fake.clear_requests();
    h.reconcile_token("alice").await;
    assert_eq!(h.record("alice").unwrap().sha256, token.hash());
    assert_eq!(h.held_token("alice"), token);
    assert!(h.fake.events().is_empty());
}

#[tokio::test]
async fn drift_a_deleted_plaintext_secret_means_a_new_token() {
    let h = harness();
    h.create_ready_upstream("openai", Provider::OpenAi);
    h.create_token("alice", token_spec(&["openai"]));
    h.reconcile_token("alice").await;
    let old = h.held_token("alice");

    h.fake.remove(&secret_path(NS, "alice-strake"));
    h.fake.clear_requests();
    h.reconcile_token("alice").await;
    let new = h.held_token("alice");
    assert_ne!(new, old, "a lost token cannot be recovered, only replaced");
    assert_eq!(h.record("alice").unwrap().sha256, new.hash());
    let events = h.fake.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "Reissued");
    assert!(events[0].1.contains("deleted"), "{}", events[0].1);
}

#[tokio::test]
async fn drift_hand_edits_are_repaired() {
    let h = harness();
    h.create_ready_upstream("openai", Provider::OpenAi);
    h.create_token("alice", token_spec(&["openai"]));
    h.reconcile_token("alice").await;
    let token = h.held_token("alice");
    let path = secret_path(NS, "alice-strake");

    // An env key edited: re-applied, same token.
    let mut s = h.plaintext("alice");
    s.data.as_mut().unwrap().insert(
        "OPENAI_BASE_URL".into(),
        ByteString(b"https://evil.example".to_vec()),
    );
    h.fake.put(&path, &s);
    h.reconcile_token("alice").await;
    let data = h.plaintext("alice").data.unwrap();
    assert_eq!(data["OPENAI_BASE_URL"].0, b"https://llm.example.com/v1");
    assert_eq!(h.held_token("alice"), token);

    // The token itself replaced by a valid token the proxy does not know: not trusted.
    let planted = Token::mint();
    let mut s = h.plaintext("alice");
    s.data.as_mut().unwrap().insert(
        TOKEN_KEY.into(),
        ByteString(planted.expose().as_bytes().to_vec()),
    );
    h.fake.put(&path, &s);
    h.reconcile_token("alice").await;
    let now_held = h.held_token("alice");
    assert_ne!(now_held, planted);
    assert_ne!(now_held, token);
    assert_eq!(h.record("alice").unwrap().sha256, now_held.hash());
    assert_ne!(
        tok::check(now_held.expose()),
        Err(tok::TokenError::Checksum)
    );
}

#[tokio::test]
async fn a_secret_that_is_not_ours_is_never_overwritten() {
    let h = harness();
    h.create_ready_upstream("openai", Provider::OpenAi);
    let foreign = Secret {
        metadata: ObjectMeta {
            name: Some("alice-strake".into()),
            namespace: Some(NS.into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            "password".into(),
            ByteString(b"hunter2".to_vec()),
        )])),
        ..Secret::default()
    };
    h.fake.put(&secret_path(NS, "alice-strake"), &foreign);
    h.create_token("alice", token_spec(&["openai"]));

    h.reconcile_token("alice").await;
    assert_eq!(
        phase(&h.token("alice")),
        (Some(Phase::Failed), "SecretConflict".into())
    );
    assert!(!h.fake.exists(&proxy_token_path("alice")));
    assert!(
        h.fake
            .calls()
            .iter()
            .all(|c| !c.starts_with("PATCH /api/v1/namespaces/team-a/secrets"))
    );
    assert_eq!(event_reasons(&h.fake), ["SecretConflict"]);
}

#[tokio::test]
async fn revoke_deletes_the_record_and_tolerates_it_being_gone() {
    let h = harness();
    h.create_ready_upstream("openai", Provider::OpenAi);
    h.create_token("alice", token_spec(&["openai"]));
    h.reconcile_token("alice").await;
    assert!(h.fake.exists(&proxy_token_path("alice")));

    let mut t = h.token("alice");
    t.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    h.fake.put(&token_path("alice"), &t);
    h.fake.clear_requests();
    let action = h.reconcile_token("alice").await;
    assert_eq!(action, Action::await_change());
    assert!(!h.fake.exists(&proxy_token_path("alice")));
    assert_eq!(
        h.fake.calls()[..2],
        [
            format!("DELETE {}", proxy_token_path("alice")),
            format!("POST /apis/events.k8s.io/v1/namespaces/{NS}/events"),
        ]
    );
    // Then the finalizer is removed, letting the deletion complete.
    assert!(
        h.fake
            .calls()
            .contains(&format!("PATCH {}", token_path("alice")))
    );
    assert!(
        h.token("alice")
            .metadata
            .finalizers
            .unwrap_or_default()
            .is_empty()
    );
    assert_eq!(event_reasons(&h.fake), ["Revoked"]);

    // Cleanup again, with the record already gone: 404 is success.
    let mut t = h.token("alice");
    t.metadata.finalizers = Some(vec![FINALIZER.into()]);
    h.fake.put(&token_path("alice"), &t);
    h.reconcile_token("alice").await;
    assert!(
        h.token("alice")
            .metadata
            .finalizers
            .unwrap_or_default()
            .is_empty()
    );

    // A queued reconcile with a stale copy, after the object is gone: done, not an error.
    h.fake.remove(&token_path("alice"));
    h.fake.clear_requests();
    let action = strake_token::reconcile(Arc::new(t), h.ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    assert!(h.fake.events().is_empty(), "no second Revoked event");
}

#[tokio::test]
async fn the_revoker_withdraws_ahead_and_the_cleanup_still_reports_the_revocation_once() {
    let h = harness();
    h.create_ready_upstream("openai", Provider::OpenAi);
    h.create_token("alice", token_spec(&["openai"]));
    h.reconcile_token("alice").await;
    let mut t = h.token("alice");
    t.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    h.fake.put(&token_path("alice"), &t);
    h.fake.clear_requests();

    let due = crate::core::revoker::Withdrawal {
        namespace: NS.into(),
        name: "alice".into(),
        uid: "uid-alice".into(),
    };
    super::revoker::withdraw(h.ctx.clone(), due).await;
    assert_eq!(
        h.fake.calls(),
        [format!("DELETE {}", proxy_token_path("alice"))],
        "the revoker only withdraws the record"
    );
    assert!(h.fake.events().is_empty(), "no event before the cleanup");

    // The queued reconcile finds the record gone, and still says so.
    h.reconcile_token("alice").await;
    assert_eq!(event_reasons(&h.fake), ["Revoked"]);
    assert!(
        h.token("alice")
            .metadata
            .finalizers
            .unwrap_or_default()
            .is_empty()
    );
}

#[tokio::test]
async fn the_token_controller_is_not_woken_by_the_echo_of_its_own_secret_writes() {
    use futures::StreamExt;
    use kube::core::PartialObjectMeta;

    let h = harness();
    h.create_ready_upstream("openai", Provider::OpenAi);
    h.create_token("alice", token_spec(&["openai"]));
    h.reconcile_token("alice").await;
    let meta = |s: Secret| PartialObjectMeta::<Secret> {
        types: None,
        metadata: s.metadata,
        _phantom: Default::default(),
    };
    let held = meta(h.plaintext("alice"));
    let record = meta(h.fake.get(&proxy_token_path("alice")).unwrap());
    let mut edited = held.clone();
    edited.metadata.resource_version = Some("edited-by-hand".into());

    let events = futures::stream::iter([
        Ok(watcher::Event::Apply(held.clone())),
        Ok(watcher::Event::Apply(record.clone())),
        Ok(watcher::Event::Apply(edited.clone())),
        Ok(watcher::Event::Delete(held.clone())),
    ]);
    let triggers: Vec<_> = super::without_echoes(events, h.ctx.clone())
        .map(|t| t.unwrap().metadata.resource_version)
        .collect()
        .await;
    assert_eq!(
        triggers,
        [
            edited.metadata.resource_version,
            held.metadata.resource_version
        ],
        "the two writes' echoes are dropped; an edit and a delete wake it"
    );
}

#[tokio::test]
async fn with_usage_collected_a_deleted_token_is_refused_at_once_and_released_after_the_last_collection()
 {
    let h = harness_with(crate::cli::UsageSettings {
        admin_urls: vec!["http://127.0.0.1:1".into()],
        interval: Duration::from_secs(10),
        writes_per_second: 100,
        cursor_retention: Duration::from_secs(3600),
        ..Default::default()
    });
    h.create_ready_upstream("openai", Provider::OpenAi);
    h.create_token("alice", token_spec(&["openai"]));
    h.reconcile_token("alice").await;

    // Just deleted: the record goes now, the finalizer waits for the
    // collector to fold the replicas' last counters into status.
    let mut t = h.token("alice");
    t.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    h.fake.put(&token_path("alice"), &t);
    h.fake.clear_requests();
    let action = h.reconcile_token("alice").await;
    assert!(
        !h.fake.exists(&proxy_token_path("alice")),
        "refused at once"
    );
    assert!(
        action != Action::await_change(),
        "looked at again: {action:?}"
    );
    assert!(
        h.fake.events().is_empty(),
        "no Revoked event before the last collection"
    );
    assert_eq!(
        h.token("alice").metadata.finalizers.unwrap_or_default(),
        [FINALIZER]
    );

    // The collector wrote the last usage; the hold is over.
    let mut t = h.token("alice");
    t.metadata.deletion_timestamp = Some(Time(Timestamp::now() - SignedDuration::from_secs(60)));
    let status = t.status.get_or_insert_with(Default::default);
    status.usage = Some(strake_crds::TokenUsage {
        lifetime: Some(strake_crds::UsageTotals {
            requests: 7,
            spend_usd: "1.25".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    h.fake.put(&token_path("alice"), &t);
    h.reconcile_token("alice").await;
    assert_eq!(event_reasons(&h.fake), ["Revoked"]);
    let note = h.fake.events()[0].1.clone();
    assert!(
        note.contains("7 requests") && note.contains("$1.25"),
        "{note}"
    );
    assert!(
        h.token("alice")
            .metadata
            .finalizers
            .unwrap_or_default()
            .is_empty()
    );
}

/// The Secret `openai-upstream` holding `REAL_KEY`, opted in for UpstreamKeys.
fn key_secret() -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some("openai-upstream".into()),
            namespace: Some(NS.into()),
            labels: Some(BTreeMap::from([(
                strake_crds::UPSTREAM_KEY_SECRET_LABEL.into(),
                strake_crds::UPSTREAM_KEY_SECRET_OPT_IN.into(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            "api-key".into(),
            ByteString(format!("{REAL_KEY}\n").into_bytes()),
        )])),
        ..Secret::default()
    }
}

async fn reconcile_upstream(h: &Harness, name: &str) -> UpstreamKey {
    let uk: UpstreamKey = h.fake.get(&upstream_path(name)).unwrap();
    upstream_key::reconcile(Arc::new(uk), h.ctx.clone())
        .await
        .expect("reconcile succeeds");
    h.fake.get(&upstream_path(name)).unwrap()
}

fn ready_reason(uk: &UpstreamKey) -> Option<&str> {
    condition::ready_reason(&uk.status.as_ref()?.conditions)
}

/// True when some request wrote the proxy-namespace upstream Secret.
fn wrote_upstream_secret(fake: &FakeApi, name: &str) -> bool {
    fake.requests()
        .iter()
        .any(|r| r.path == proxy_upstream_path(name) && r.method == http::Method::PATCH)
}

#[tokio::test]
async fn upstream_key_naming_an_unlabelled_secret_waits_for_the_label() {
    let h = harness();
    let mut unlabelled = key_secret();
    unlabelled.metadata.labels = None;
    h.fake.put(&secret_path(NS, "openai-upstream"), &unlabelled);
    h.fake.put(
        &upstream_path("openai"),
        &upstream_key_obj("openai", Provider::OpenAi),
    );

    let uk = reconcile_upstream(&h, "openai").await;
    assert_eq!(
        ready_reason(&uk),
        Some(upstream::reason::SECRET_NOT_OPTED_IN)
    );
    assert!(!upstream::is_ready(&uk));
    assert!(!wrote_upstream_secret(&h.fake, "openai"));
    assert!(!h.fake.exists(&proxy_upstream_path("openai")));
    let events = h.fake.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, upstream::reason::SECRET_NOT_OPTED_IN);
    assert!(
        events[0]
            .1
            .contains("label secret openai-upstream strake.sh/upstream-key=true"),
        "{}",
        events[0].1
    );
    for r in h.fake.requests() {
        assert!(!r.body.contains(REAL_KEY), "key in {} {}", r.method, r.path);
    }

    // Whoever manages the Secret opts it in: the key is published.
    h.fake
        .put(&secret_path(NS, "openai-upstream"), &key_secret());
    let uk = reconcile_upstream(&h, "openai").await;
    assert!(upstream::is_ready(&uk));
    let published: Secret = h.fake.get(&proxy_upstream_path("openai")).unwrap();
    assert_eq!(
        published.data.unwrap()[contract::API_KEY_KEY].0,
        REAL_KEY.as_bytes()
    );

    // The label is taken off again: the proxy loses the key.
    h.fake.put(&secret_path(NS, "openai-upstream"), &unlabelled);
    let uk = reconcile_upstream(&h, "openai").await;
    assert_eq!(
        ready_reason(&uk),
        Some(upstream::reason::SECRET_NOT_OPTED_IN)
    );
    assert!(!h.fake.exists(&proxy_upstream_path("openai")));
}

#[tokio::test]
async fn upstream_key_to_a_host_not_allowed_is_refused_and_withdrawn() {
    let h = harness();
    h.fake
        .put(&secret_path(NS, "openai-upstream"), &key_secret());
    let mut uk = upstream_key_obj("openai", Provider::OpenAi);
    uk.spec.base_url = Some("http://169.254.169.254/latest".into());
    h.fake.put(&upstream_path("openai"), &uk);

    let uk = reconcile_upstream(&h, "openai").await;
    assert_eq!(ready_reason(&uk), Some(upstream::reason::HOST_NOT_ALLOWED));
    assert!(!wrote_upstream_secret(&h.fake, "openai"));
    assert!(!h.fake.exists(&proxy_upstream_path("openai")));

    // Pointed at the provider it is published; pointed away again, the
    // published Secret is withdrawn.
    let mut edited = uk.clone();
    edited.spec.base_url = Some("https://api.openai.com".into());
    edited.metadata.generation = Some(2);
    h.fake.put(&upstream_path("openai"), &edited);
    let uk = reconcile_upstream(&h, "openai").await;
    assert!(upstream::is_ready(&uk));
    assert!(h.fake.exists(&proxy_upstream_path("openai")));

    let mut edited = uk.clone();
    edited.spec.base_url = Some("http://kubernetes.default.svc".into());
    edited.metadata.generation = Some(3);
    h.fake.put(&upstream_path("openai"), &edited);
    let uk = reconcile_upstream(&h, "openai").await;
    assert_eq!(ready_reason(&uk), Some(upstream::reason::HOST_NOT_ALLOWED));
    assert!(!h.fake.exists(&proxy_upstream_path("openai")));
    let message = &uk.status.unwrap().conditions[0].message;
    assert!(
        message.contains("http://kubernetes.default.svc:80") && !message.contains(REAL_KEY),
        "{message}"
    );
}

#[tokio::test]
async fn upstream_key_publishes_the_real_key_and_withdraws_it_when_unusable() {
    let mut h = harness();
    let key_secret = key_secret();
    h.fake.put(&secret_path(NS, "openai-upstream"), &key_secret);
    let uk = upstream_key_obj("openai", Provider::OpenAi);
    h.fake.put(&upstream_path("openai"), &uk);
    let mut naming = StrakeToken::new("alice", token_spec(&["openai"]));
    naming.metadata.namespace = Some(NS.into());
    h.token_writer
        .apply_watcher_event(&watcher::Event::Apply(naming));

    let reconcile = |h: &Harness| {
        let uk: UpstreamKey = h.fake.get(&upstream_path("openai")).unwrap();
        upstream_key::reconcile(Arc::new(uk), h.ctx.clone())
    };
    reconcile(&h).await.unwrap();
    let published: Secret = h.fake.get(&proxy_upstream_path("openai")).unwrap();
    assert_eq!(
        published.type_.as_deref(),
        Some(contract::UPSTREAM_SECRET_TYPE)
    );
    let data = published.data.as_ref().unwrap();
    assert_eq!(data[contract::API_KEY_KEY].0, REAL_KEY.as_bytes());
    let record: UpstreamRecord = objects::read_record(&published).unwrap();
    assert_eq!(record.name, "team-a/openai");
    assert_eq!(record.base_url, "https://api.openai.com");
    let uk: UpstreamKey = h.fake.get(&upstream_path("openai")).unwrap();
    assert!(upstream::is_ready(&uk));
    assert_eq!(uk.status.as_ref().unwrap().tokens, Some(1));
    assert_eq!(event_reasons(&h.fake), ["Published"]);

    // The key is rotated in its Secret: the proxy gets the new one.
    let mut rotated = key_secret.clone();
    rotated.data = Some(BTreeMap::from([(
        "api-key".into(),
        ByteString(b"sk-proj-ROTATED".to_vec()),
    )]));
    h.fake.put(&secret_path(NS, "openai-upstream"), &rotated);
    reconcile(&h).await.unwrap();
    let published: Secret = h.fake.get(&proxy_upstream_path("openai")).unwrap();
    assert_eq!(
        published.data.unwrap()[contract::API_KEY_KEY].0,
        b"sk-proj-ROTATED"
    );

    // Its Secret disappears: not Ready, and the proxy no longer has the key.
    h.fake.remove(&secret_path(NS, "openai-upstream"));
    reconcile(&h).await.unwrap();
    assert!(!h.fake.exists(&proxy_upstream_path("openai")));
    let uk: UpstreamKey = h.fake.get(&upstream_path("openai")).unwrap();
    assert_eq!(
        condition::ready_reason(&uk.status.unwrap().conditions),
        Some(upstream::reason::SECRET_NOT_FOUND)
    );

    // The key never left the two Secrets that hold it.
    for r in h.fake.requests() {
        let writes_upstream_secret =
            r.path == proxy_upstream_path("openai") && r.method == http::Method::PATCH;
        if !writes_upstream_secret && r.method != http::Method::GET {
            assert!(
                !r.body.contains(REAL_KEY),
                "key leaked in {} {}",
                r.method,
                r.path
            );
        }
    }

    // Deleted: the finalizer withdraws it (idempotently).
    let mut uk: UpstreamKey = h.fake.get(&upstream_path("openai")).unwrap();
    uk.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    h.fake.put(&upstream_path("openai"), &uk);
    reconcile(&h).await.unwrap();
    let uk: UpstreamKey = h.fake.get(&upstream_path("openai")).unwrap();
    assert!(uk.metadata.finalizers.unwrap_or_default().is_empty());
    h.token_writer
        .apply_watcher_event(&watcher::Event::InitDone);
}

#[tokio::test]
async fn orphan_sweep_deletes_only_secrets_whose_source_is_gone() {
    let h = harness();
    h.create_ready_upstream("openai", Provider::OpenAi);
    h.create_token("alice", token_spec(&["openai"]));
    h.reconcile_token("alice").await;
    let key = upstream::ApiKey::for_tests(b"k");
    for (name, role) in [
        ("bob", "token"),
        ("alice", "token"),
        ("gone", "upstream"),
        ("openai", "upstream"),
    ] {
        let source = contract::SourceRef {
            namespace: NS.into(),
            name: name.into(),
        };
        let secret = if role == "token" {
            objects::token_secret(
                PROXY_NS,
                &source,
                &crate::core::token::record(&h.token("alice"), Token::mint().hash()),
                None,
                &[],
            )
        } else {
            let record = UpstreamRecord {
                name: contract::upstream_id(NS, name),
                provider: Provider::OpenAi,
                base_url: "https://api.openai.com".into(),
                headers: BTreeMap::new(),
                endpoints: vec![],
                source: Some(source.clone()),
                budget: None,
            };
            objects::upstream_secret(PROXY_NS, &source, &record, &key, None)
        };
        let path = secret_path(PROXY_NS, secret.metadata.name.as_deref().unwrap());
        if name != "alice" {
            h.fake.put(&path, &secret);
        }
    }
    h.fake.clear_requests();

    let deleted = orphans::sweep(&h.ctx.client, &h.ctx.settings, &h.ctx.metrics)
        .await
        .unwrap();
    assert_eq!(deleted, 2);
    assert!(!h.fake.exists(&proxy_token_path("bob")));
    assert!(!h.fake.exists(&proxy_upstream_path("gone")));
    assert!(h.fake.exists(&proxy_token_path("alice")));
    assert!(h.fake.exists(&proxy_upstream_path("openai")));
    // Secrets first, then the sources: a source created in between is never
    // mistaken for missing.
    let calls = h.fake.calls();
    assert!(calls[0].starts_with(&format!("GET /api/v1/namespaces/{PROXY_NS}/secrets")));
}

#[tokio::test]
async fn tokens_are_woken_by_upstream_readiness_not_by_its_token_count() {
    use futures::StreamExt;
    let h = harness();
    h.create_ready_upstream("openai", Provider::OpenAi);
    let ready: UpstreamKey = h.fake.get(&upstream_path("openai")).unwrap();
    let fresh = upstream_key_obj("openai", Provider::OpenAi);
    let mut recounted = ready.clone();
    recounted.status.as_mut().unwrap().tokens = Some(7);
    let mut edited = ready.clone();
    edited.metadata.generation = Some(2);
    let events = futures::stream::iter([
        Ok(watcher::Event::Init),
        Ok(watcher::Event::InitApply(fresh.clone())),
        Ok(watcher::Event::InitDone),
        Ok(watcher::Event::Apply(fresh)),
        Ok(watcher::Event::Apply(ready.clone())),
        Ok(watcher::Event::Apply(recounted.clone())),
        Ok(watcher::Event::Apply(edited)),
        Ok(watcher::Event::Delete(recounted)),
    ]);
    let passed: Vec<_> = super::relevant_upstream_changes(events)
        .map(|r| {
            let uk = r.unwrap();
            (uk.metadata.generation, upstream::is_ready(&uk))
        })
        .collect()
        .await;
    assert_eq!(
        passed,
        [
            (Some(1), false), // first seen
            (Some(1), true),  // became Ready
            (Some(2), false), // spec changed
            (Some(1), true),  // deleted
        ]
    );
}

#[test]
fn finalizer_races_are_settled_not_counted_as_failures() {
    use kube::runtime::finalizer::Error as F;
    let api_error = |code: u16| {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            ..Default::default()
        }))
    };
    assert_eq!(
        super::settle_finalizer(Err(F::AddFinalizer(api_error(422)))).unwrap(),
        Action::requeue(Duration::from_secs(1))
    );
    assert_eq!(
        super::settle_finalizer(Err(F::RemoveFinalizer(api_error(404)))).unwrap(),
        Action::await_change()
    );
    assert!(super::settle_finalizer(Err(F::AddFinalizer(api_error(403)))).is_err());
    assert!(super::settle_finalizer(Err(F::RemoveFinalizer(api_error(500)))).is_err());
}
