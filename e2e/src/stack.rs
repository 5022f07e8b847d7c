//! The running stack and a test's namespace in it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use base64::Engine as _;
use http::Method;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};
use strake_crds::{Phase, StrakeToken, contract};
use tokio::io::AsyncWriteExt;

use crate::env::repo_root;
use crate::http::{Http, Reply};
use crate::{DevEnv, eventually, leaks};

/// How long the operator gets for what it does in the background (a
/// reconcile, a restored Secret): generous, because tests share two cores.
pub const RECONCILE: Duration = Duration::from_secs(30);

/// The stack `e2e/dev/up.sh` started, as the cluster admin sees it.
pub struct Stack {
    pub env: DevEnv,
    pub client: kube::Client,
    pub http: Http,
}

/// What a command printed, and whether it succeeded.
#[derive(Debug)]
pub struct Output {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Stack {
    pub async fn connect() -> Result<Stack> {
        let env = DevEnv::load()?;
        let kubeconfig = Kubeconfig::read_from(&env.kubeconfig)?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(Stack {
            client: kube::Client::try_from(config)?,
            http: Http::default(),
            env,
        })
    }

    /// Runs a program with the admin kubeconfig and the cluster's tools on PATH.
    pub async fn run(&self, program: &Path, args: &[&str], stdin: Option<&str>) -> Result<Output> {
        let path = format!(
            "{}:{}",
            self.env.cluster_bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .env("KUBECONFIG", &self.env.kubeconfig)
            .env("PATH", path)
            .current_dir(repo_root())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin is piped");
            pipe.write_all(input.as_bytes()).await?;
        }
        let out = child.wait_with_output().await?;
        Ok(Output {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    pub async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<Output> {
        self.run(&self.env.cluster_bin.join("kubectl"), args, stdin)
            .await
    }

    /// kubectl that must succeed; returns its stdout.
    pub async fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let out = self.kubectl(args, stdin).await?;
        ensure!(
            out.ok,
            "kubectl {} failed: {}",
            args.join(" "),
            out.stderr.trim()
        );
        Ok(out.stdout)
    }

    /// The operator's `/metrics`: its admin port on the process-only stack;
    /// on the node, every operator pod's (the host reaches pod addresses),
    /// joined: the leader's series are the ones that matter.
    pub async fn operator_metrics(&self) -> Result<String> {
        if !self.env.operator_admin_url.is_empty() {
            let url = format!("{}/metrics", self.env.operator_admin_url);
            return Ok(self.http.get(&url).await?.body);
        }
        let ips = self
            .kubectl_ok(
                &[
                    "get",
                    "pods",
                    "-n",
                    &self.env.namespace,
                    "-l",
                    "app.kubernetes.io/component=operator",
                    "-o",
                    "jsonpath={.items[*].status.podIP}",
                ],
                None,
            )
            .await?;
        let mut all = String::new();
        for ip in ips.split_whitespace() {
            // The chart's operator admin port.
            all += &self
                .http
                .get(&format!("http://{ip}:8081/metrics"))
                .await?
                .body;
        }
        Ok(all)
    }

    pub async fn helm(&self, args: &[&str]) -> Result<Output> {
        self.run(&self.env.cluster_bin.join("helm"), args, None)
            .await
    }

    /// `e2e/dev/service.sh DIR ACTION NAME`: start, stop or restart the
    /// operator, the proxy or the mock (start and restart wait until ready).
    pub async fn service(&self, action: &str, name: &str) -> Result<()> {
        let script = repo_root().join("e2e/dev/service.sh");
        let dir = self.env.dir.display().to_string();
        let out = self.run(&script, &[&dir, action, name], None).await?;
        ensure!(
            out.ok,
            "service.sh {action} {name} failed: {}",
            out.stderr.trim()
        );
        Ok(())
    }

    /// `e2e/dev/service.sh DIR status NAME`: ready, running or stopped.
    pub async fn service_status(&self, name: &str) -> Result<String> {
        let script = repo_root().join("e2e/dev/service.sh");
        let dir = self.env.dir.display().to_string();
        let out = self.run(&script, &[&dir, "status", name], None).await?;
        Ok(out.stdout.trim().to_string())
    }

    /// The pid of the operator process (`DIR/run/operator.pid`).
    pub async fn operator_pid(&self) -> Result<u32> {
        let file = self.env.dir.join("run/operator.pid");
        let pid = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        Ok(pid.trim().parse()?)
    }

    /// `e2e/cluster/apiserver.sh DIR ACTION`: stop or start the kube-apiserver alone.
    pub async fn apiserver(&self, action: &str) -> Result<()> {
        let script = repo_root().join("e2e/cluster/apiserver.sh");
        let dir = self.env.cluster_dir.display().to_string();
        let out = self.run(&script, &[&dir, action], None).await?;
        ensure!(
            out.ok,
            "apiserver.sh {action} failed: {}",
            out.stderr.trim()
        );
        Ok(())
    }

    /// A fresh namespace for one test, deleted when the test ends.
    pub async fn namespace(&self, test: &str) -> Result<TestNs<'_>> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        let name = format!(
            "e2e-{test}-{:06x}",
            (nanos ^ u128::from(std::process::id())) & 0xff_ffff
        );
        let yaml = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels: {{strake.sh/e2e: \"true\"}}\n"
        );
        self.kubectl_ok(&["apply", "-f", "-"], Some(&yaml)).await?;
        Ok(TestNs { stack: self, name })
    }

    /// The Secrets the operator publishes for the proxy.
    pub fn proxy_secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.env.namespace)
    }

    /// An OpenAI chat completion as the holder of `issued` sends it: to their
    /// OPENAI_BASE_URL with their OPENAI_API_KEY. `marker` goes into the
    /// prompt, so the test can find the request in the mock's recording.
    pub async fn chat(&self, issued: &Issued, marker: &str) -> Result<Reply> {
        let url = format!("{}/chat/completions", issued.env("OPENAI_BASE_URL")?);
        let auth = format!("Bearer {}", issued.env("OPENAI_API_KEY")?);
        let body = json!({
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": format!("Hello from {marker}")}],
        });
        self.http
            .send(Method::POST, &url, &[("authorization", &auth)], Some(&body))
            .await
    }

    /// An Anthropic message as Claude Code sends it with ANTHROPIC_BASE_URL
    /// and ANTHROPIC_AUTH_TOKEN (a bearer token).
    pub async fn message(&self, issued: &Issued, marker: &str) -> Result<Reply> {
        let url = format!("{}/v1/messages", issued.env("ANTHROPIC_BASE_URL")?);
        let auth = format!("Bearer {}", issued.env("ANTHROPIC_AUTH_TOKEN")?);
        let body = json!({
            "model": "claude-sonnet-4-6",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": format!("Hello from {marker}")}],
        });
        let headers = [
            ("authorization", auth.as_str()),
            ("anthropic-version", "2023-06-01"),
        ];
        self.http
            .send(Method::POST, &url, &headers, Some(&body))
            .await
    }

    /// Sends chat completions until one gets `status`.
    pub async fn chat_until(&self, issued: &Issued, marker: &str, status: u16) -> Result<Reply> {
        eventually(
            &format!("a request with {}'s token gets {status}", issued.name),
            RECONCILE,
            || async {
                let reply = self.chat(issued, marker).await?;
                ensure!(
                    reply.status == status,
                    "got {}: {}",
                    reply.status,
                    reply.body
                );
                Ok(reply)
            },
        )
        .await
    }

    /// Runs `revoke` while sending requests with `issued`'s token every 10 ms,
    /// and returns the time from the start of `revoke` to the first 401 (at
    /// most `limit`).
    pub async fn time_to_401(
        &self,
        issued: &Issued,
        marker: &str,
        limit: Duration,
        revoke: impl Future<Output = Result<()>>,
    ) -> Result<Duration> {
        let start = Instant::now();
        let probe = async {
            loop {
                let reply = self.chat(issued, marker).await?;
                match reply.status {
                    401 => return Ok(start.elapsed()),
                    200 => {}
                    other => bail!("while revoking: got {other}: {}", reply.body),
                }
                ensure!(
                    start.elapsed() < limit,
                    "{}'s token still works {limit:?} after revocation",
                    issued.name
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let (revoked, latency) = tokio::join!(revoke, probe);
        revoked?;
        latency
    }

    /// The requests the mock upstream received whose body contains `marker`.
    pub async fn upstream_requests(&self, marker: &str) -> Result<Vec<Value>> {
        let reply = self
            .http
            .get(&format!("{}/__mock/requests", self.env.mock_url))
            .await?;
        ensure!(reply.status == 200, "mock recording: {}", reply.status);
        let all: Vec<Value> = serde_json::from_str(&reply.body)?;
        Ok(all
            .into_iter()
            .filter(|r| r["body"].as_str().is_some_and(|b| b.contains(marker)))
            .collect())
    }

    /// Replaces the keys the mock upstream accepts.
    pub async fn set_upstream_keys(&self, keys: Value) -> Result<()> {
        let url = format!("{}/__mock/keys", self.env.mock_url);
        let reply = self.http.send(Method::PUT, &url, &[], Some(&keys)).await?;
        ensure!(reply.status == 204, "PUT /__mock/keys: {reply:?}");
        Ok(())
    }

    /// The mock's default keys (those of `e2e/dev/up.sh`).
    pub fn default_upstream_keys(&self) -> Value {
        let k = &self.env.mock_keys;
        json!({
            "openai": [k.openai], "anthropic": [k.anthropic],
            "azure": [k.azure], "gemini": [k.gemini],
        })
    }
}

/// The value of header `name` in a recorded request.
pub fn header<'a>(request: &'a Value, name: &str) -> Option<&'a str> {
    request["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .and_then(|h| h[1].as_str())
}

/// Checks what reached the provider: at least one request, each with the
/// real key in `key_header` and no trace of `token` anywhere.
pub fn assert_upstream_saw(
    requests: &[Value],
    key_header: &str,
    expected: &str,
    token: &str,
) -> Result<()> {
    ensure!(!requests.is_empty(), "the upstream received no request");
    for r in requests {
        ensure!(
            header(r, key_header) == Some(expected),
            "{} {}: {key_header} is not the real key",
            r["method"],
            r["path"]
        );
        ensure!(
            !r.to_string().contains(token),
            "{} {}: the Strake token reached the upstream",
            r["method"],
            r["path"]
        );
        ensure!(
            !r["headers"]
                .to_string()
                .contains(strake_crds::token::PREFIX),
            "{} {}: a Strake token is in the upstream request's headers",
            r["method"],
            r["path"]
        );
    }
    Ok(())
}

/// A token as its holder has it: the plaintext Secret's data.
pub struct Issued {
    /// The StrakeToken's name.
    pub name: String,
    pub token: String,
    data: BTreeMap<String, String>,
}

impl Issued {
    /// A token as a holder got it printed (`kubectl strake env`): its env
    /// keys. The token is the value of its API-key variable.
    pub fn from_env(env: &DevEnv, name: &str, vars: BTreeMap<String, String>) -> Result<Issued> {
        let token = ["OPENAI_API_KEY", "ANTHROPIC_AUTH_TOKEN"]
            .iter()
            .find_map(|k| vars.get(*k))
            .cloned()
            .with_context(|| format!("{name}'s env has no API key: {:?}", vars.keys()))?;
        Issued::checked(env, name, token, vars)
    }

    /// Remembers the token for the leak scan (before anything can print
    /// it), then checks its format.
    fn checked(
        env: &DevEnv,
        name: &str,
        token: String,
        data: BTreeMap<String, String>,
    ) -> Result<Issued> {
        leaks::remember(env, "token", &token)?;
        strake_crds::token::check(&token)
            .map_err(|e| anyhow::anyhow!("{name}'s token is malformed: {e}"))?;
        Ok(Issued {
            name: name.to_string(),
            token,
            data,
        })
    }

    /// An env key of the Secret (OPENAI_BASE_URL, ANTHROPIC_AUTH_TOKEN, …).
    pub fn env(&self, key: &str) -> Result<&str> {
        self.data
            .get(key)
            .map(String::as_str)
            .with_context(|| format!("{}'s Secret has no {key}", self.name))
    }

    /// Every key of the Secret, as `envFrom` would set them.
    pub fn vars(&self) -> &BTreeMap<String, String> {
        &self.data
    }
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<_> = self.data.keys().collect();
        write!(f, "Issued({}, keys {keys:?})", self.name)
    }
}

/// A test's own namespace, with helpers that act as its users do.
pub struct TestNs<'a> {
    pub stack: &'a Stack,
    pub name: String,
}

impl TestNs<'_> {
    /// `kubectl apply -f -` into this namespace.
    pub async fn apply(&self, yaml: &str) -> Result<String> {
        self.stack
            .kubectl_ok(&["apply", "-n", &self.name, "-f", "-"], Some(yaml))
            .await
    }

    /// kubectl with `-n` this namespace; must succeed.
    pub async fn kubectl(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        self.stack.kubectl_ok(&all, None).await
    }

    /// A Secret with the real key and an UpstreamKey pointing at the mock.
    pub async fn upstream(&self, name: &str, provider: &str, key: &str) -> Result<()> {
        self.upstream_secret(name, key).await?;
        self.upstream_key(name, provider, &self.stack.env.mock_url)
            .await
    }

    /// Applies the UpstreamKey `name` for the Secret `NAME-upstream`.
    pub async fn upstream_key(&self, name: &str, provider: &str, base_url: &str) -> Result<()> {
        self.apply(&format!(
            "apiVersion: strake.sh/v1alpha1\nkind: UpstreamKey\nmetadata: {{name: {name}}}\nspec:\n  provider: {provider}\n  baseUrl: {base_url}\n  secretRef: {{name: {name}-upstream, key: api-key}}\n"
        ))
        .await?;
        Ok(())
    }

    /// Creates or replaces the Secret `NAME-upstream` holding a real key,
    /// labelled for use by UpstreamKeys.
    pub async fn upstream_secret(&self, name: &str, key: &str) -> Result<()> {
        self.key_secret(name, key, true).await
    }

    /// Creates or replaces the Secret `NAME-upstream` holding a real key;
    /// without `opted_in` it lacks the label UpstreamKeys require, like a
    /// Secret made for something else.
    pub async fn key_secret(&self, name: &str, key: &str, opted_in: bool) -> Result<()> {
        leaks::remember(&self.stack.env, "upstream-key", key)?;
        let labels = if opted_in {
            format!(
                "\n  labels: {{{}: {:?}}}",
                strake_crds::UPSTREAM_KEY_SECRET_LABEL,
                strake_crds::UPSTREAM_KEY_SECRET_OPT_IN
            )
        } else {
            String::new()
        };
        let encoded = base64::engine::general_purpose::STANDARD.encode(key);
        self.apply(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}-upstream{labels}\ndata:\n  api-key: {encoded}\n"
        ))
        .await?;
        Ok(())
    }

    /// The stack's OpenAI and Anthropic UpstreamKeys, named `openai` and `anthropic`.
    pub async fn default_upstreams(&self) -> Result<()> {
        let keys = &self.stack.env.mock_keys;
        self.upstream("openai", "openai", &keys.openai).await?;
        self.upstream("anthropic", "anthropic", &keys.anthropic)
            .await
    }

    /// Applies a StrakeToken; `spec` is its spec as YAML lines.
    pub async fn token(&self, name: &str, spec: &str) -> Result<()> {
        let spec: String = spec.lines().map(|l| format!("  {l}\n")).collect();
        self.apply(&format!(
            "apiVersion: strake.sh/v1alpha1\nkind: StrakeToken\nmetadata: {{name: {name}}}\nspec:\n{spec}"
        ))
        .await?;
        Ok(())
    }

    /// `kubectl wait --for=condition=Ready`, then the token as it is now.
    pub async fn wait_ready(&self, name: &str) -> Result<StrakeToken> {
        self.kubectl(&[
            "wait",
            "--for=condition=Ready",
            &format!("straketoken/{name}"),
            "--timeout=60s",
        ])
        .await?;
        Ok(self.tokens().get(name).await?)
    }

    /// Waits until the operator has seen the token's current generation and
    /// put it in `phase`.
    pub async fn wait_phase(&self, name: &str, phase: Phase) -> Result<StrakeToken> {
        eventually(
            &format!("straketoken {name} reaches phase {}", phase.as_str()),
            RECONCILE,
            || async {
                let t = self.tokens().get(name).await?;
                let status = t.status.clone().unwrap_or_default();
                ensure!(
                    status.observed_generation == t.metadata.generation,
                    "observedGeneration {:?}, generation {:?}",
                    status.observed_generation,
                    t.metadata.generation
                );
                ensure!(
                    status.phase == Some(phase),
                    "phase {:?}, conditions {:?}",
                    status.phase,
                    status.conditions
                );
                Ok(t)
            },
        )
        .await
    }

    /// Applies a token, waits until it is Ready and reads its Secret.
    pub async fn issue(&self, name: &str, spec: &str) -> Result<Issued> {
        self.token(name, spec).await?;
        self.wait_ready(name).await?;
        self.issued(name).await
    }

    /// The token's plaintext Secret (`NAME-strake`), as its holder reads it.
    pub async fn issued(&self, name: &str) -> Result<Issued> {
        let secret = self
            .secrets()
            .get(&format!("{name}-strake"))
            .await
            .with_context(|| format!("reading {name}-strake"))?;
        Self::issued_from(name, &secret, &self.stack.env)
    }

    fn issued_from(name: &str, secret: &Secret, env: &DevEnv) -> Result<Issued> {
        let data: BTreeMap<String, String> = secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
            .collect();
        let token = data
            .get("token")
            .cloned()
            .with_context(|| format!("{name}'s Secret has no `token`"))?;
        Issued::checked(env, name, token, data)
    }

    /// Waits until the plaintext Secret holds a token other than `old`'s.
    pub async fn reissued(&self, old: &Issued) -> Result<Issued> {
        eventually(
            &format!("{} is issued a new token", old.name),
            RECONCILE,
            || async {
                let new = self.issued(&old.name).await?;
                ensure!(new.token != old.token, "still the old token");
                Ok(new)
            },
        )
        .await
    }

    /// `kubectl delete straketoken NAME --wait=false`: revocation as users do it.
    pub async fn delete_token(&self, name: &str) -> Result<()> {
        self.kubectl(&["delete", "straketoken", name, "--wait=false"])
            .await?;
        Ok(())
    }

    /// `kubectl patch straketoken NAME --type=merge -p PATCH`.
    pub async fn patch_token(&self, name: &str, patch: &str) -> Result<()> {
        self.kubectl(&["patch", "straketoken", name, "--type=merge", "-p", patch])
            .await?;
        Ok(())
    }

    /// A string unique to this test and `what`, to find its requests upstream.
    pub fn marker(&self, what: &str) -> String {
        format!("[{}/{what}]", self.name)
    }

    pub fn tokens(&self) -> Api<StrakeToken> {
        Api::namespaced(self.stack.client.clone(), &self.name)
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.stack.client.clone(), &self.name)
    }

    /// The name of the hashed Secret the operator publishes for token `name`.
    pub fn hashed_secret(&self, name: &str) -> String {
        contract::token_secret_name(&self.name, name)
    }

    /// Deletes a Secret by hand, as a careless admin would.
    pub async fn delete_secret(&self, api: &Api<Secret>, name: &str) -> Result<()> {
        api.delete(name, &DeleteParams::default()).await?;
        Ok(())
    }
}

impl Drop for TestNs<'_> {
    fn drop(&mut self) {
        // Deleting the namespace deletes its StrakeTokens, and the operator
        // cleans up after them; nothing waits for that.
        let _ = std::process::Command::new(self.stack.env.cluster_bin.join("kubectl"))
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .env("KUBECONFIG", &self.stack.env.kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
